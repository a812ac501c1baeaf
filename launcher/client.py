"""The builtin cvmfs client: a drop-in for ``cvmfs2`` in pure Python.

    python3 -m launcher.client -o config=FILE[:FILE2][,debug][,OPTS] [-f] REPO MOUNTPOINT

Reads the flat configuration file(s), opens and verifies the repository, mounts
it (mount(2) as root or fake root in a user namespace, else fusermount3) and
serves it.  Without ``-f`` the command returns only once the mount is usable
(exit 0) or has failed (non-zero, reason on stderr and in ``CVMFS_USYSLOG``),
and the daemon keeps serving in the background, as cvmfs2 does.  SIGTERM and
SIGINT unmount (lazily) and exit; an unmount from outside ends the daemon.

Exit codes follow cvmfs2's loader (spec 7.3): 2 options, 4 mount, 16 catalog
or trust failure at mount, 1 anything else.
"""

import os
import signal
import sys
import threading
import time
import traceback

from launcher import VERSION
from launcher.errors import CvmfsexecError, UsageError, run_main

EXIT_OPTIONS = 2
EXIT_MOUNT = 4
EXIT_CATALOG = 16
EXIT_DOUBLE_MOUNT = 21      # cvmfs2's code for "already mounted there"
RELOAD_INTERVAL = 30.0      # seconds between repository TTL checks

USAGE = ("usage: python3 -m launcher.client [-h] [-V] [-f] [-d] "
         "-o config=FILE[:FILE...][,debug][,OPTION...] REPO MOUNTPOINT")

# -o options the loader consumes or ignores; anything else goes to the FUSE mount.
_IGNORED = ("system_mount", "grab_mountpoint", "cvmfs_suid", "disable_watchdog",
            "fuse_debug", "simple_options_parsing", "_netdev", "user", "nouser",
            "users", "auto", "noauto", "ro", "nodev", "nosuid", "rw")
_FUSE_PASS = ("allow_other", "allow_root", "default_permissions", "nonempty")


class Options(object):
    def __init__(self):
        self.config_files = []
        self.debug = False
        self.foreground = False
        self.fsname = "cvmfs2"
        self.fuse_options = []
        self.simple = False
        self.fqrn = None
        self.mountpoint = None
        self.method = None


def parse_args(argv):
    opts = Options()
    rest = []
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            opts.help = True
            return opts
        if arg in ("-V", "--version"):
            opts.version = True
            return opts
        if arg == "-f":
            opts.foreground = True
        elif arg == "-d":
            opts.debug = True
            opts.foreground = True
        elif arg == "-s":
            pass
        elif arg == "-o" or (arg.startswith("-o") and len(arg) > 2):
            value = arg[2:] if len(arg) > 2 else next(it, None)
            if value is None:
                raise UsageError("-o needs an argument", USAGE)
            _parse_o(opts, value)
        elif arg.startswith("-") and arg != "-":
            raise UsageError("unknown option %s" % arg, USAGE)
        else:
            rest.append(arg)
    if len(rest) != 2:
        raise UsageError("expected REPO and MOUNTPOINT", USAGE)
    opts.fqrn, opts.mountpoint = rest[0], os.path.abspath(rest[1])
    opts.config_files = [os.path.abspath(p) for p in opts.config_files]
    return opts


def _parse_o(opts, value):
    for item in value.split(","):
        key, _, val = item.partition("=")
        if key == "config":
            opts.config_files.extend(p for p in val.split(":") if p)
        elif key == "debug":
            opts.debug = True
        elif key == "foreground":
            opts.foreground = True
        elif key == "fsname":
            opts.fsname = val
        elif key == "simple_options_parsing":
            opts.simple = True
        elif key == "mount_method":     # ours: direct | fusermount (testing and the runtime)
            opts.method = val
        elif key in _FUSE_PASS or key == "max_read":
            opts.fuse_options.append(item)
        elif key in _IGNORED or key in ("uid", "gid", "libfuse") or not key:
            pass
        else:
            opts.fuse_options.append(item)


def read_config(opts):
    """The parameters of the config file(s), in order; later files win."""
    if not opts.config_files:
        raise UsageError("no configuration: use -o config=FILE", USAGE)
    for path in opts.config_files:
        if not os.path.isfile(path):
            raise UsageError("configuration file %s does not exist" % path)
    try:
        from launcher.cvmfs import config as cvmfsconfig
    except ImportError:
        cvmfsconfig = None
    values = {}
    for path in opts.config_files:
        if cvmfsconfig is not None:
            values = cvmfsconfig.parse_file(path, values, simple=opts.simple, fqrn=opts.fqrn)
        else:
            values.update(_parse_flat(path))
    return values


def _parse_flat(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, _, v = line.partition("=")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            out[k.strip()] = v
    return out


class Log(object):
    """Appends to CVMFS_USYSLOG (always) and CVMFS_DEBUGLOG (debug mode)."""

    def __init__(self, fqrn, syslog_path=None, debug_path=None, stderr=False):
        self.fqrn = fqrn
        self.lock = threading.Lock()
        self.syslog = self._open(syslog_path)
        self.debuglog = self._open(debug_path)
        self.stderr = stderr

    @staticmethod
    def _open(path):
        if not path:
            return None
        try:
            d = os.path.dirname(path)
            if d and not os.path.isdir(d):
                os.makedirs(d)
            return open(path, "a", 1)
        except (OSError, IOError):
            return None

    def _line(self, msg):
        return "%s (%s) %s\n" % (time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime()),
                                 self.fqrn, msg)

    def __call__(self, msg):
        line = self._line(msg)
        with self.lock:
            for f in (self.syslog, self.debuglog):
                if f is not None:
                    f.write(line)
            if self.stderr:
                sys.stderr.write(line)

    def debug(self, msg):
        if self.debuglog is not None:
            with self.lock:
                self.debuglog.write(self._line(msg))


class Client(object):
    """One mounted repository: repository, operations, mount, server."""

    def __init__(self, opts, config, log):
        self.opts = opts
        self.config = config
        self.log = log
        self.repo = None
        self.server = None
        self.method = None
        self._stopping = threading.Event()

    def open_repository(self):
        from launcher.cvmfs.repository import Repository
        try:
            self.repo = Repository(self.opts.fqrn, self.config)
        except CvmfsexecError as e:
            e.exit_code = EXIT_CATALOG
            e.message = "failed to open repository %s: %s" % (self.opts.fqrn, e.message)
            raise

    def mount(self):
        from launcher.fuse import mount as fmount
        from launcher.fuse.channel import Channel, ProtocolError
        from launcher.fuse.cvmfsops import CvmfsOperations
        from launcher.fuse.server import Server
        mp = self.opts.mountpoint
        if fmount.premounted_fd(mp) is None and not os.path.isdir(mp):
            raise CvmfsexecError("mount point %s does not exist" % mp, exit_code=EXIT_MOUNT)
        if fmount.premounted_fd(mp) is None and fmount.is_mounted(mp):
            # Stacking a second client over a live mount hides the first one and
            # leaves it running; cvmfs2 refuses this too (double mount).
            raise CvmfsexecError("%s is already mounted" % mp,
                                 hint="unmount it first (umount / fusermount3 -u %s)" % mp,
                                 exit_code=EXIT_DOUBLE_MOUNT)
        ops = CvmfsOperations(self.repo, self.config, log=self.log)
        options = list(self.opts.fuse_options)
        if _on(self.config.get("CVMFS_CHECK_PERMISSIONS", "no")) \
                and "default_permissions" not in options:
            options.append("default_permissions")
        fd, self.method = fmount.mount(mp, fsname=self.opts.fsname, subtype=None,
                                       options=options, method=self.opts.method)
        channel = Channel(fd)
        try:
            if not channel.handshake():
                raise CvmfsexecError("FUSE connection ended before INIT", exit_code=EXIT_MOUNT)
        except ProtocolError as e:
            self.unmount()
            raise CvmfsexecError(str(e), exit_code=EXIT_MOUNT)
        timeout = float(self.config.get("CVMFS_KCACHE_TIMEOUT") or 60)
        self.server = Server(ops, channel, entry_timeout=timeout, attr_timeout=timeout,
                             negative_timeout=timeout, log=self.log,
                             trace=self.log.debug if self.log.debuglog is not None else None)
        self.ops = ops
        self.server.start()
        self.log("mounted %s on %s (%s, FUSE 7.%d, revision %s)"
                 % (self.opts.fqrn, mp, self.method, channel.minor, self.repo.revision))

    def unmount(self):
        from launcher.fuse import mount as fmount
        try:
            fmount.unmount(self.opts.mountpoint, self.method, lazy=True)
        except CvmfsexecError as e:
            self.log("unmount failed: %s" % e.message)

    def stop(self, signum=None, frame=None):
        if not self._stopping.is_set():
            self._stopping.set()
            self.log("signal %s: unmounting %s" % (signum, self.opts.mountpoint))
            if self.method == "premounted":
                pass    # we cannot unmount what we did not mount: serve() returns
            else:
                self.unmount()

    def _next_check(self):
        """Seconds until the repository's TTL expires (1..RELOAD_INTERVAL)."""
        expires_in = getattr(self.repo, "expires_in", None)
        left = expires_in() if expires_in is not None else RELOAD_INTERVAL
        if left is None:
            return RELOAD_INTERVAL      # fixed root catalog: reload() is a no-op anyway
        return min(RELOAD_INTERVAL, max(1.0, left + 0.05))

    def _reload_loop(self):
        while not self._stopping.wait(self._next_check()):
            try:
                if self.repo.reload():
                    self.ops.new_generation()
                    self.server.invalidate_all()
                    self.log("switched to revision %s" % self.repo.revision)
            except Exception as e:
                self.log("catalog reload failed: %s" % (e,))

    def serve(self):
        t = threading.Thread(target=self._reload_loop, name="reload")
        t.daemon = True
        t.start()
        # Returns once unmounted (or on a signal for a pre-mounted descriptor).
        self.server.run(self._stopping if self.method == "premounted" else None)
        self._stopping.set()
        self.log("unmounted %s; exiting" % self.opts.mountpoint)
        try:
            self.repo.close()
        except Exception:
            pass


def _on(value):
    return str(value).strip().lower() in ("yes", "on", "1", "true")


def tune_malloc():
    """Keep the daemon's resident memory small (glibc only; a no-op elsewhere).

    Chunk downloads allocate multi-megabyte buffers in worker threads.  glibc
    then (a) gives each thread its own arena and (b) raises its mmap threshold
    to the largest freed block, so later big buffers come from arenas that are
    never returned to the system: the RSS grows by tens of MB.  A fixed mmap
    threshold (which also disables the dynamic one) and two arenas avoid both.
    """
    from launcher import libc
    try:
        mallopt = libc.load().mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    mallopt(M_ARENA_MAX, 2)
    mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024)


def _install_signals(client):
    signal.signal(signal.SIGTERM, client.stop)
    signal.signal(signal.SIGINT, client.stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _setup(opts):
    config = read_config(opts)
    log = Log(opts.fqrn, config.get("CVMFS_USYSLOG"),
              config.get("CVMFS_DEBUGLOG") if opts.debug else None,
              stderr=opts.foreground and opts.debug)
    return config, log


def _start(client):
    tune_malloc()
    client.open_repository()
    client.mount()


def run_foreground(opts):
    config, log = _setup(opts)
    client = Client(opts, config, log)
    _install_signals(client)
    try:
        _start(client)
    except CvmfsexecError as e:
        log("mount failed: %s" % e.message)
        raise
    sys.stdout.write("CernVM-FS: mounted cvmfs on %s\n" % opts.mountpoint)
    sys.stdout.flush()
    client.serve()
    return 0


def run_daemon(opts):
    """Fork; the child mounts and reports through a pipe; the parent returns the outcome."""
    config, log = _setup(opts)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(wfd)
        return _parent_wait(rfd, pid, opts)
    os.close(rfd)
    status = 0
    try:
        os.setsid()
        client = Client(opts, config, log)
        _install_signals(client)
        try:
            _start(client)
        except CvmfsexecError as e:
            log("mount failed: %s" % e.message)
            _report(wfd, e.exit_code, format_error(e))
            os._exit(e.exit_code)
        _detach_stdio()
        os.chdir("/")      # do not keep the caller's directory busy
        _report(wfd, 0, "")
        client.serve()
    except BaseException:
        msg = "internal error (a bug): %s" % traceback.format_exc()
        log(msg)
        try:
            _report(wfd, 1, msg)
        except OSError:
            pass
        status = 1
    os._exit(status)


def format_error(e):
    return e.message + (" (hint: %s)" % e.hint if e.hint else "")


def _report(wfd, code, message):
    data = ("%d\n%s" % (code, message)).encode("utf-8", "replace")
    while data:
        n = os.write(wfd, data)
        data = data[n:]
    os.close(wfd)


def _parent_wait(rfd, pid, opts):
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    text = b"".join(chunks).decode("utf-8", "replace")
    code_s, _, message = text.partition("\n")
    if not code_s:
        _, status = os.waitpid(pid, 0)
        raise CvmfsexecError("the client process died before mounting (status %d)" % status)
    code = int(code_s)
    if code != 0:
        os.waitpid(pid, 0)
        raise CvmfsexecError(message, exit_code=code)
    sys.stdout.write("CernVM-FS: mounted cvmfs on %s\n" % opts.mountpoint)
    return 0


def _detach_stdio():
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main(argv):
    opts = parse_args(argv)
    if getattr(opts, "help", False):
        sys.stdout.write(USAGE + "\n")
        return 0
    if getattr(opts, "version", False):
        sys.stdout.write("CernVM-FS builtin client (cvmfsexec %s)\n" % VERSION)
        return 0
    if opts.foreground:
        return run_foreground(opts)
    return run_daemon(opts)


if __name__ == "__main__":
    run_main(main, prog="cvmfs2")
