"""Unpack a cpio "newc" archive (an RPM payload) into a directory, safely.

Kept: file modes (including for directories, applied last so that a read-only
directory can still be filled), modification times, symlinks (absolute
targets rewritten to relative ones so they resolve inside the tree) and
hardlinks.  In newc, the members of a hardlink group share (dev, ino); the
data travels with one member (GNU cpio and rpm: the last), the others have
size 0.  Refused: names that are absolute, contain '..', or whose parent
directory inside the tree is a symlink -- any of these could write outside the
tree.  Skipped: '.build-id' trees (debug links) and device nodes.
"""
import os
import stat

from launcher.errors import CvmfsexecError

NEWC_MAGICS = (b"070701", b"070702")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"
CHUNK = 256 * 1024


class CpioError(CvmfsexecError):
    pass


class Entry(object):
    __slots__ = ("name", "ino", "mode", "nlink", "mtime", "size", "dev")

    def __init__(self, name, ino, mode, nlink, mtime, size, dev):
        self.name = name
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.mtime = mtime
        self.size = size
        self.dev = dev


def _read(stream, n, what):
    chunks = []
    left = n
    while left > 0:
        block = stream.read(min(left, CHUNK))
        if not block:
            raise CpioError("%s: archive truncated" % what)
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


def _pad(n):
    return (4 - n % 4) % 4


def read_entry(stream, what):
    """The next Entry (its data still in the stream), or None at the trailer."""
    head = _read(stream, HEADER_LEN, what)
    if head[:6] not in NEWC_MAGICS:
        raise CpioError("%s: not a newc cpio archive (magic %r)" % (what, head[:6]),
                        "only the newc format used by rpm is supported")
    try:
        fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise CpioError("%s: corrupt cpio header" % what)
    ino, mode, _uid, _gid, nlink, mtime, size, devmaj, devmin, _rmaj, _rmin, namesize, _chk = fields
    raw = _read(stream, namesize, what)
    _read(stream, _pad(HEADER_LEN + namesize), what)
    name = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
    if name == TRAILER:
        return None
    return Entry(name, ino, mode, nlink, mtime, size, (devmaj, devmin))


def safe_relpath(name):
    """The entry's path relative to the tree, or CpioError if it could escape it."""
    if name.startswith("/"):
        raise CpioError("refusing archive entry with an absolute path: %s" % name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CpioError("refusing archive entry that would escape the tree: %s" % name)
    return "/".join(parts)


def relative_target(relpath, target):
    """A target that resolves inside the tree: /usr/lib64/x seen from usr/lib64/y is ../../usr/lib64/x."""
    if not target.startswith("/"):
        return target
    depth = relpath.count("/")
    return ("../" * depth) + target.lstrip("/") if depth else target.lstrip("/") or "."


class Extractor(object):
    """Extracts one or more archives into ``dest`` (which must exist)."""

    def __init__(self, dest, skip=None):
        self.dest = os.path.abspath(dest)
        self.skip = skip or default_skip
        self.dir_modes = {}        # relpath -> (mode, mtime), applied by finish()
        self.entries = []          # relpaths extracted, in order
        self.skipped = []

    def _check_parents(self, relpath):
        """Create missing parent directories; refuse a parent that is not a real directory."""
        path = self.dest
        for part in relpath.split("/")[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path)
                os.chmod(path, 0o755)    # a parent no package owns: not subject to umask
                continue
            if stat.S_ISLNK(st.st_mode):
                raise CpioError("refusing archive entry below a symlinked directory: %s (%s is a "
                                "symlink)" % (relpath, os.path.relpath(path, self.dest)))
            if not stat.S_ISDIR(st.st_mode):
                raise CpioError("archive entry %s needs %s to be a directory"
                                % (relpath, os.path.relpath(path, self.dest)))
            if st.st_mode & 0o300 != 0o300:
                os.chmod(path, st.st_mode | 0o700)   # e.g. 0555 from an earlier archive

    def _clear(self, path, keep_dir=False):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            raise CpioError("archive entry %s would replace a directory"
                            % os.path.relpath(path, self.dest))
        os.unlink(path)

    def extract(self, stream, what="archive"):
        links = {}    # (dev, ino) -> {"path": first member with data or None, "pending": [...]}
        while True:
            e = read_entry(stream, what)
            if e is None:
                break
            relpath = safe_relpath(e.name)
            if not relpath or self.skip(relpath) or not self._supported(e):
                self.skipped.append(e.name)
                _discard(stream, e.size + _pad(e.size), what)
                continue
            self._check_parents(relpath)
            path = os.path.join(self.dest, relpath)
            kind = stat.S_IFMT(e.mode)
            if kind == stat.S_IFDIR:
                self._clear(path, keep_dir=True)
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                self.dir_modes[relpath] = (stat.S_IMODE(e.mode), e.mtime)
            elif kind == stat.S_IFLNK:
                target = _read(stream, e.size, what).decode("utf-8", "surrogateescape")
                self._clear(path)
                os.symlink(relative_target(relpath, target), path)
                os.utime(path, (e.mtime, e.mtime), follow_symlinks=False)
            else:
                self._regular(stream, e, path, links, what)
            _discard(stream, _pad(e.size), what)
            self.entries.append(relpath)
        for group in links.values():      # hardlinked files whose data never came: empty files
            if group["path"] is None and group["pending"]:
                first, rest = group["pending"][0], group["pending"][1:]
                self._write(None, first, 0, group["mode"], group["mtime"], what)
                for p in rest:
                    self._clear(p)
                    os.link(first, p)

    def _supported(self, e):
        kind = stat.S_IFMT(e.mode)
        return kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)

    def _regular(self, stream, e, path, links, what):
        if e.nlink > 1:
            key = (e.dev, e.ino)
            group = links.setdefault(key, {"path": None, "pending": [], "mode": e.mode,
                                           "mtime": e.mtime})
            if e.size == 0:
                if group["path"] is not None:
                    self._clear(path)
                    os.link(group["path"], path)
                else:
                    group["pending"].append(path)
                return
            self._write(stream, path, e.size, e.mode, e.mtime, what)
            group["path"] = path
            for p in group["pending"]:
                self._clear(p)
                os.link(path, p)
            group["pending"] = []
            return
        self._write(stream, path, e.size, e.mode, e.mtime, what)

    def _write(self, stream, path, size, mode, mtime, what):
        self._clear(path)
        # O_EXCL|O_NOFOLLOW: never write through something that appeared meanwhile
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            left = size
            while left > 0:
                block = stream.read(min(left, CHUNK))
                if not block:
                    raise CpioError("%s: archive truncated" % what)
                out.write(block)
                left -= len(block)
            os.fchmod(out.fileno(), stat.S_IMODE(mode))
        os.utime(path, (mtime, mtime))

    def add_file(self, relpath, data, mode=0o644, mtime=None):
        """Write a file of our own into the tree, with the same escape checks as archive entries."""
        relpath = safe_relpath(relpath)
        self._check_parents(relpath)
        import io
        import time
        self._write(io.BytesIO(data), os.path.join(self.dest, relpath), len(data), mode,
                    int(time.time()) if mtime is None else mtime, relpath)
        self.entries.append(relpath)

    def finish(self):
        """Apply directory modes and times, deepest first."""
        for relpath in sorted(self.dir_modes, key=lambda p: -p.count("/")):
            mode, mtime = self.dir_modes[relpath]
            path = os.path.join(self.dest, relpath)
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime))


def default_skip(relpath):
    """Skip debug build-id link trees (usr/lib/.build-id/...), as the reference makedist does."""
    return ".build-id" in relpath.split("/")


def _discard(stream, n, what):
    if n:
        _read(stream, n, what)


def extract(stream, dest, what="archive"):
    """Extract one archive into ``dest``; returns the Extractor (entries, skipped)."""
    ex = Extractor(dest)
    ex.extract(stream, what)
    ex.finish()
    return ex

