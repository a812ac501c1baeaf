"""The C library through ctypes: loaded once, prototypes declared once.

Every module that calls libc (namespaces, mounts, fuse/mount, the client's
mallopt) goes through ``load()``.  The library is opened with
``use_errno=True`` so that ``check()`` can report a refusal with its real errno
(udocker omits it and prints ``strerror(-1)``).
"""

import ctypes
import os

# restype, argtypes.  syscall(2) is variadic: callers pass ctypes objects.
# A symbol this libc lacks (mallopt on musl, setns before glibc 2.14) is left
# out here and fails with AttributeError where it is used.
_PROTOTYPES = {
    "mount": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.c_ulong, ctypes.c_char_p]),
    "umount2": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_int]),
    "unshare": (ctypes.c_int, [ctypes.c_int]),
    "setns": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "prctl": (ctypes.c_int, [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                             ctypes.c_ulong, ctypes.c_ulong]),
    "mallopt": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "syscall": (ctypes.c_long, None),
}

_libc = None


def _open():
    # dlopen(NULL) finds libc among the interpreter's own libraries in ~0.1 ms;
    # ctypes.util.find_library() runs ldconfig in a subprocess (~30 ms on 3.6),
    # so it is only the fallback (a Python that does not link libc dynamically).
    lib = ctypes.CDLL(None, use_errno=True)
    if hasattr(lib, "mount"):
        return lib
    from ctypes.util import find_library
    return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)


def load():
    """The process's libc (a ctypes.CDLL with use_errno=True and prototypes set)."""
    global _libc
    if _libc is None:
        lib = _open()
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                func = getattr(lib, name)
            except AttributeError:
                continue
            func.restype = restype
            if argtypes is not None:
                func.argtypes = argtypes
        _libc = lib
    return _libc


def check(ret, what, filename=None):
    """Return ``ret``; if it is -1 raise OSError(errno, "WHAT: strerror"[, filename]).

    Call it right after the C call and in the same thread: ctypes keeps the
    errno of this thread's last foreign call.
    """
    if ret != -1:
        return ret
    err = ctypes.get_errno()
    args = (err, "%s: %s" % (what, os.strerror(err)))
    if filename is not None:
        args += (filename,)
    raise OSError(*args)
