"""Unpack the self-extracting artifact beside itself, atomically, then run it.

This module runs from inside the artifact's zip (its ``__main__.py`` calls
:func:`main`), so it may use only the standard library and must parse on
Python 3.6.

The warm path (already extracted) costs one small file read: the tree holds
``.payload-sha256``, the hash builder/artifact.py computed over the payload,
and a match means the tree is complete, because that file is written before
the tree is renamed into place. Everything the cold path needs (zipfile, lzma,
tarfile, fcntl, threads) is imported there, not here.

The cold path, in the spirit of pex's atomic_directory:

1. take an flock on ``<dest>.lock`` beside the destination, polling with a
   deadline (CVMFSEXEC_EXTRACT_TIMEOUT) rather than forever like shiv;
2. re-check the hash: another process may have finished while we waited;
3. unpack into a sibling ``<dest>.tmp-<pid>-<random>-<host>`` -- a unique name,
   so a leftover of a killed run (possibly with read-only directories in it)
   never gets in the way; leftovers are removed under the lock;
4. move the user's cache (dist/var/lib/cvmfs) and logs from an older tree
   into the new one, move the old tree aside, rename the new one into place.

Where flock is unsupported (some NFS and Lustre mounts answer ENOLCK or
EOPNOTSUPP), every process unpacks into its own sibling and the renames
decide: rename(2) onto a non-empty directory fails, so exactly one tree wins
and the losers, finding the same hash in place, discard theirs.
"""

import os
import sys

from launcher import envvars
from launcher.errors import CvmfsexecError, run_main

MARKER = ".payload-sha256"
LOG = os.path.join("log", "extract.log")
PRESERVE = (os.path.join("dist", "var", "lib", "cvmfs"), "log")
# flock(2) errors meaning "this filesystem cannot lock", not "someone holds it"
_NOLOCK_ERRNOS = ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL")


def main(digest, command):
    """Entry point of the artifact: extract if needed, then exec the command."""
    run_main(lambda argv: _run(digest, command, argv), prog=command)


def _run(digest, command, argv):
    artifact = os.path.abspath(sys.argv[0])
    dest = destination(artifact, command)
    if installed_digest(dest) != digest:
        ensure_extracted(artifact, dest, digest, explicit=bool(envvars.get("CVMFSEXEC_EXTRACT_DIR")))
    exec_command(dest, command, argv)


def destination(artifact, command):
    """.cvmfsexec (.singcvmfs) beside the artifact, or CVMFSEXEC_EXTRACT_DIR."""
    override = envvars.get("CVMFSEXEC_EXTRACT_DIR")
    if override:
        return os.path.abspath(override)
    return os.path.join(os.path.dirname(artifact), "." + command)


def installed_digest(dest):
    try:
        with open(os.path.join(dest, MARKER)) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def exec_command(dest, command, argv):
    script = os.path.join(dest, command)
    # Run the command script with this same interpreter: no second Python search.
    # -S: the runtime is stdlib only, and site costs up to 30 ms (Debian's .pth files).
    exe = sys.executable
    args = [exe, "-S", script] + list(argv) if exe else [script] + list(argv)
    try:
        os.execv(args[0], args)
    except OSError as e:
        raise CvmfsexecError("cannot run %s: %s" % (script, e.strerror or e),
                             hint="remove %s to make the artifact extract again" % dest)


# --- cold path ----------------------------------------------------------------

def ensure_extracted(artifact, dest, digest, explicit=False, use_lock=True, timeout=None):
    """Make dest hold this artifact's payload. Returns True if this call extracted it.

    use_lock=False is the path taken where flock is unsupported (and is
    called directly by the tests, which have no such filesystem).
    """
    parent = os.path.dirname(dest)
    check_destination(dest, explicit)
    try:
        os.makedirs(parent, exist_ok=True)
        lockfd = os.open(dest + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise CvmfsexecError("cannot extract into %s: %s" % (dest, e.strerror or e),
                             hint=writable_hint(dest))
    try:
        locked = use_lock and lock(lockfd, dest + ".lock", timeout)
        if installed_digest(dest) == digest:
            return False
        remove_leftovers(dest, everything=locked)
        tmp = unique_sibling(dest, "tmp")
        try:
            unpack(artifact, tmp)
            write_text(os.path.join(tmp, MARKER), digest + "\n")
            won = install(tmp, dest, digest)
        finally:
            if os.path.lexists(tmp):
                remove_tree(tmp)
        if won:
            append_log(dest, "extracted payload sha256 %s from %s (%s)"
                       % (digest, artifact, "locked" if locked else "without lock"))
        else:
            append_log(dest, "discarded a parallel unpacking of payload sha256 %s: "
                             "another process's rename won (no flock here)" % digest)
        return won
    finally:
        os.close(lockfd)        # releases the flock


def writable_hint(dest):
    return ("%s must be writable and have room for the dist; otherwise set CVMFSEXEC_EXTRACT_DIR "
            "to another directory, e.g. CVMFSEXEC_EXTRACT_DIR=${TMPDIR:-/tmp}/cvmfsexec-$USER"
            % os.path.dirname(dest))


def check_destination(dest, explicit):
    """Refuse to replace a directory the user named that is not an extraction of ours."""
    if not explicit or not os.path.isdir(dest) or installed_digest(dest) is not None:
        return
    if os.listdir(dest):
        raise CvmfsexecError("CVMFSEXEC_EXTRACT_DIR=%s is not empty and holds no cvmfsexec extraction"
                             % dest, hint="name a new or empty directory, e.g. %s"
                             % os.path.join(dest, ".cvmfsexec"))


def lock(fd, path, timeout=None):
    """flock fd within timeout seconds. False if the filesystem cannot lock."""
    import errno
    import fcntl
    import time
    if timeout is None:
        raw = envvars.get("CVMFSEXEC_EXTRACT_TIMEOUT")
        try:
            timeout = float(raw)
        except ValueError:
            raise CvmfsexecError("CVMFSEXEC_EXTRACT_TIMEOUT=%s is not a number of seconds" % raw,
                                 hint="e.g. CVMFSEXEC_EXTRACT_TIMEOUT=300, or unset it")
    deadline = time.time() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                if errno.errorcode.get(e.errno) in _NOLOCK_ERRNOS:
                    return False
                raise CvmfsexecError("cannot lock %s: %s" % (path, e.strerror))
        if time.time() >= deadline:
            raise CvmfsexecError("timed out after %gs waiting for another extraction (lock %s)"
                                 % (timeout, path),
                                 hint="raise CVMFSEXEC_EXTRACT_TIMEOUT, or look for a stuck "
                                      "process holding that file")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def unique_sibling(dest, what):
    import socket
    import binascii
    return "%s.%s-%d-%s-%s" % (dest, what, os.getpid(),
                               binascii.hexlify(os.urandom(4)).decode(), socket.gethostname())


def remove_leftovers(dest, everything):
    """Remove <dest>.tmp-* and <dest>.old-* left by killed runs.

    With the lock held no other extraction runs, so all of them are stale.
    Without it, only those of dead processes on this host.
    """
    import errno
    import socket
    parent, base = os.path.split(dest)
    host = socket.gethostname()
    for name in os.listdir(parent):
        for what in (".tmp-", ".old-"):
            if not name.startswith(base + what):
                continue
            fields = name[len(base + what):].split("-", 2)
            if not everything:
                if len(fields) != 3 or fields[2] != host or not fields[0].isdigit():
                    continue
                try:
                    os.kill(int(fields[0]), 0)
                    continue                    # alive: still working
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        continue
            remove_tree(os.path.join(parent, name))


def remove_tree(path):
    """rm -rf that copes with directories a dist made read-only and never
    descends into a mount point: an old tree may still hold a repository
    mounted under dist/cvmfs (mountrepo), and walking it would download the
    repository's catalogs, let alone try to delete its files."""
    import stat
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        _remove_dir(path, st.st_dev)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def _remove_dir(path, dev):
    import stat
    try:
        os.chmod(path, stat.S_IRWXU)
        names = os.listdir(path)
    except OSError:
        names = []
    for name in names:
        child = os.path.join(path, name)
        try:
            st = os.lstat(child)
        except OSError:
            continue                    # e.g. ENOTCONN: a dead FUSE mount; leave it
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev == dev:        # another device: a mount point, left alone
                _remove_dir(child, dev)
            continue
        try:
            os.unlink(child)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def install(tmp, dest, digest):
    """Rename tmp into place as dest; True if ours won, False if the same payload was there."""
    import errno
    adopted = False
    for _ in range(50):
        if installed_digest(dest) == digest:
            if adopted:
                adopt(tmp, dest)       # lost a lock-free race after taking the old tree's cache
            return False
        aside = None
        if os.path.lexists(dest):
            adopted = adopt(dest, tmp) or adopted
            aside = unique_sibling(dest, "old")
            try:
                os.rename(dest, aside)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue
                raise CvmfsexecError("cannot move the old %s aside: %s" % (dest, e.strerror),
                                     hint=writable_hint(dest))
        try:
            os.rename(tmp, dest)
            return True
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise CvmfsexecError("cannot rename %s to %s: %s" % (tmp, dest, e.strerror),
                                     hint=writable_hint(dest))
        finally:
            if aside:
                remove_tree(aside)
    raise CvmfsexecError("%s keeps changing under us; giving up" % dest)


def adopt(old, new):
    """Move the user's cache and logs from tree old into tree new, where new's are empty."""
    moved = False
    for rel in PRESERVE:
        src, dst = os.path.join(old, rel), os.path.join(new, rel)
        if not os.path.isdir(src) or os.path.islink(src) or not os.listdir(src):
            continue
        try:
            if os.path.isdir(dst) and not os.listdir(dst):
                os.rmdir(dst)
            if not os.path.lexists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.rename(src, dst)
                moved = True
        except OSError:
            pass            # a cache is a cache: start afresh rather than fail
    return moved


def append_log(dest, message):
    import time
    try:
        os.makedirs(os.path.join(dest, "log"), exist_ok=True)
        with open(os.path.join(dest, LOG), "a") as f:
            f.write("%s pid %d: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                         os.getpid(), message))
    except (IOError, OSError):
        pass


def write_text(path, text):
    write_file(path, text.encode(), 0o644)


# --- unpacking ------------------------------------------------------------------

def unpack(artifact, tmp):
    """Unpack the artifact's payload and launcher/ into the new directory tmp."""
    import tarfile
    import zipfile
    from concurrent.futures import ThreadPoolExecutor
    try:
        import lzma
    except ImportError:
        raise CvmfsexecError("%s lacks the lzma module needed to extract %s" % (sys.executable, artifact),
                             hint="run the file with another Python >= 3.6, e.g. "
                                  "/usr/bin/python3 %s" % artifact)
    try:
        os.mkdir(tmp, 0o700)
        with zipfile.ZipFile(artifact) as zf:
            names = zf.namelist()
            dirs = []
            unpack_stream(zf.read("payload/tree.tar.xz"), tmp, dirs)
            # the builder numbers streams largest first: start the longest ones first
            streams = sorted(n for n in names if n.startswith("payload/files-"))
            # Python's lzma releases the GIL: one thread per stream, up to the CPUs we may use.
            workers = max(1, min(len(streams), cpu_count()))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(unpack_entry, artifact, n, tmp) for n in streams]
                for f in futures:
                    f.result()
            for name in names:
                if name.startswith("launcher/") and name.endswith(".py"):
                    write_file(os.path.join(tmp, name), zf.read(name), 0o644)
                    parent = os.path.dirname(os.path.join(tmp, name))
                    if (parent, 0o755, None) not in dirs:
                        dirs.append((parent, 0o755, None))
        dirs.append((tmp, 0o755, None))     # like the tree pilots know, whatever the umask
        finish_dirs(dirs)
    except OSError as e:
        raise CvmfsexecError("cannot extract %s into %s: %s"
                             % (artifact, tmp, e.strerror or e), hint=writable_hint(tmp))
    except (lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError, EOFError, KeyError, ValueError) as e:
        raise CvmfsexecError("cannot extract %s: %s" % (artifact, e),
                             hint="the file is damaged or truncated; copy it again")


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def unpack_entry(artifact, name, base):
    import zipfile
    with zipfile.ZipFile(artifact) as zf:
        blob = zf.read(name)
    unpack_stream(blob, base, None)


def unpack_stream(blob, base, dirs):
    """Write the members of one xz-compressed tar; dirs collects directories to finish."""
    import io
    import lzma
    import tarfile
    data = lzma.decompress(blob)
    view = memoryview(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for ti in tar:
            chunk = view[ti.offset_data:ti.offset_data + ti.size] if ti.isreg() else None
            write_member(base, ti, chunk, dirs)


def write_member(base, ti, data, dirs):
    """Create one tar member under base. Directories are made 0700 and finished later."""
    name = ti.name
    if name.startswith("/") or ".." in name.split("/"):
        raise CvmfsexecError("refusing unsafe member name %r in the payload" % name)
    path = os.path.join(base, name)
    if ti.isdir():
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
        if dirs is not None:
            dirs.append((path, ti.mode, ti.mtime))
    elif ti.issym():
        os.symlink(ti.linkname, path)
    elif ti.islnk():
        os.link(os.path.join(base, ti.linkname), path)
    elif ti.isreg():
        write_file(path, data, ti.mode & 0o1777, ti.mtime)
    else:
        raise CvmfsexecError("unexpected member type %r (%s) in the payload" % (ti.type, name))


def write_file(path, data, mode, mtime=None):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


def finish_dirs(dirs):
    """Give directories their modes and mtimes, deepest first (a 0555 dir locks its children)."""
    for path, mode, mtime in sorted(dirs, key=lambda d: d[0], reverse=True):
        os.chmod(path, mode & 0o1777)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
