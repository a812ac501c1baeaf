"""cvmfsexec: run a command that sees CernVM-FS repositories under /cvmfs.

    cvmfsexec [-hvN] [repo ...] -- [command ...]

How (docs/runtime.md has the user's view; launcher.modes the mode probing):

mode 3   P0 (cvmfsexec) unshares user+mount+pid namespaces and becomes fake
         root; its child P1 is pid 1 there: it builds the new root, pivots,
         mounts /proc, mounts the repositories (clients are its children),
         starts the payload P2 and serves $CVMFSMOUNT requests.  When P1 exits,
         the kernel kills everything left in the pid namespace; the mounts go
         with the mount namespace.  P1 reports P2's wait status to P0 on a pipe.
mode 3b  the same without the pid namespace, all in P0; everything is
         unmounted explicitly before exit; clients die with P0 (PDEATHSIG).
mode 2   P0 stays in the host namespaces, mounts with fusermount and serves
         requests; its child P1 enters the namespaces, binds dist/cvmfs onto
         /cvmfs (new mounts propagate into it) and becomes the payload.  The
         host keeps those mounts when P0 dies, so a watchdog in its own
         session (launcher.watchdog) unmounts them if P0 is killed.
The payload runs in a nested user namespace that maps the caller's uid and
gid back, as the reference tools do, so files it creates are the caller's.

The new root is a tmpfs holding a recursive bind of every top-level entry of
the old root except /cvmfs (symlinks copied, unreadable entries skipped).  It
is mounted unbindable, so the bind of /tmp that contains it does not recurse.
"""

import errno
import os
import select
import shutil
import signal
import sys
import tempfile

from launcher import envvars
from launcher.errors import CvmfsexecError, UsageError, format_error, run_main

USAGE = ("usage: cvmfsexec [-hvN] [repo ...] -- [command ...]\n"
         "  -h  print this help and exit\n"
         "  -v  print the version and exit\n"
         "  -N  no nested mounts: $CVMFSMOUNT/$CVMFSUMOUNT disabled, control descriptor closed\n")


def parse_args(argv):
    """-> (options dict, repos list, command list).  Options stop at the first non-option."""
    opts = {"version": False, "nonested": False}
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "--":
        arg = args.pop(0)
        if arg == "--help":
            opts["help"] = True
            continue
        if arg.startswith("--"):
            raise UsageError("unknown option %s" % arg, USAGE.splitlines()[0])
        for ch in arg[1:]:
            if ch == "v":
                opts["version"] = True
            elif ch == "N":
                opts["nonested"] = True
            elif ch == "h":
                opts["help"] = True
            else:
                raise UsageError("unknown option -%s" % ch, USAGE.splitlines()[0])
    if opts["version"] or opts.get("help"):
        return opts, [], []
    if "--" not in args:
        raise UsageError("missing '--' before the command", USAGE.splitlines()[0])
    i = args.index("--")
    repos = []
    for r in args[:i]:
        if r not in repos:
            repos.append(r)
    return opts, repos, args[i + 1:]


def main(argv):
    opts, repos, command = parse_args(argv)
    if opts["version"]:
        from launcher import VERSION
        sys.stdout.write("cvmfsexec %s\n" % VERSION)
        return 0
    if opts.get("help"):
        sys.stdout.write(USAGE)
        return 0
    try:
        status = run(repos, command, nonested=opts["nonested"])
    except Interrupted as e:
        status = e.signum          # the raw wait status of a death by that signal
    return exit_like(status)


# --------------------------------------------------------------------------
# Session


FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT, signal.SIGWINCH)
TTY_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
# forwarded or terminal signals whose default action ends a process
STOPPING = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2) + TTY_SIGNALS
MS_UNBINDABLE = 1 << 17


class Interrupted(BaseException):
    """A STOPPING signal before the command started: unwind, clean up, die by it.

    BaseException, like KeyboardInterrupt: the handlers for CvmfsexecError and
    OSError on the way must not swallow it.
    """

    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum = signum


def _interrupt(signum, frame):
    for sig in STOPPING:       # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def catch_stopping():
    """Until install_forwarding: a STOPPING signal raises Interrupted.

    Installed before the pid namespace's first process is forked, so that it
    inherits the handler: the kernel discards a signal sent to pid 1 of a pid
    namespace from outside while its action is SIG_DFL.
    """
    for sig in STOPPING:
        signal.signal(sig, _interrupt)


def die_by(signum):
    """In a forked child that must not unwind into the parent's code: die by ``signum``."""
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)      # pid 1 of a pid namespace cannot kill itself


def debug(msg):
    if envvars.get("CVMFSEXEC_DEBUG") not in ("", "0"):
        sys.stderr.write("cvmfsexec: %s\n" % msg)


def exit_like(status):
    """Exit code for a raw wait status; a signal death is re-raised on ourselves."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # no core of our own
        except (ValueError, OSError):
            pass
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)


def run(repos, command, nonested=False):
    """Mount ``repos`` and run ``command`` seeing them under /cvmfs; -> raw wait status."""
    from launcher import modes, mountconf
    from launcher.cvmfs import config as cvmfsconfig
    for r in repos:
        mountconf.check_repo_name(r)
    base = mountconf.base_dir()
    dist = mountconf.check_dist(base)
    config_repo = cvmfsconfig.config_repository(dist)
    if config_repo:
        mountconf.check_repo_name(config_repo)
        repos = [config_repo] + [r for r in repos if r != config_repo]
    command = command or [envvars.get("SHELL")]
    mode, probe = modes.choose()
    debug("%s%s" % (modes.describe(mode), "" if probe else " (forced by CVMFSEXEC_MODE)"))
    if mode == "1":
        if probe is not None:
            raise modes.userns_error(probe.userns[1])
        raise CvmfsexecError("cvmfsexec needs user namespaces (CVMFSEXEC_MODE=1)",
                             "use mountrepo/umountrepo in mode 1, or unset CVMFSEXEC_MODE")
    if mode in ("3", "3b") and repos:
        err = modes.fuse_device_error()
        if err is not None:
            raise err
    catch_stopping()
    session = Session(base, repos, command, mode, nonested)
    try:
        return session.run()
    finally:
        session.cleanup()
        for sig in STOPPING:     # nothing left to clean up: a late signal just ends us
            signal.signal(sig, signal.SIG_DFL)


class Session(object):
    def __init__(self, base, repos, command, mode, nonested):
        self.base = base
        self.repos = repos
        self.command = command
        self.mode = mode
        self.nonested = nonested
        self.uid, self.gid = os.geteuid(), os.getegid()
        try:
            self.cwd = os.getcwd()
        except OSError:
            self.cwd = "/"
        self.tmpdir = tempfile.mkdtemp(prefix="cvmfsexec-")
        self.cmdfifo = os.path.join(self.tmpdir, "cmd")
        self.waitfifo = os.path.join(self.tmpdir, "wait")
        try:
            os.mkfifo(self.cmdfifo, 0o600)
            os.mkfifo(self.waitfifo, 0o600)
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise
        self.cmd_r = self.cmd_w = None
        self.mounter = None
        self.watchdog = None        # mode 2
        self.target = None          # pid that gets forwarded signals

    def cleanup(self):
        for fd in (self.cmd_r, self.cmd_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        # interrupted while building the new root: its tmpfs is still mounted here
        from launcher import mounts
        root = os.path.join(self.tmpdir, "root")
        if os.path.ismount(root):
            try:
                mounts.umount(root, mounts.MNT_DETACH)
            except OSError:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # ---- top level, per mode ----------------------------------------------
    def run(self):
        if self.mode == "2":
            return self.run_mode2()
        from launcher import namespaces
        if self.mode == "3":
            self.fake_root(namespaces.CLONE_NEWNS | namespaces.CLONE_NEWPID)
            return self.run_mode3()
        self.fake_root(namespaces.CLONE_NEWNS)
        return self.run_inner(pid1=False)

    def fake_root(self, flags):
        from launcher import modes, namespaces
        try:
            namespaces.enter_fakeroot(flags)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOSPC, errno.EINVAL, errno.ENOSYS, errno.EACCES):
                raise modes.userns_error(e.errno)
            raise

    def run_mode3(self):
        r, w = os.pipe()
        # blocked until each side is ready: P1 until its parent-death signal is set,
        # P0 until it forwards to P1 (a signal meanwhile waits, pending)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            self.cleanup = lambda: None     # P0 owns the temporary directory
            from launcher import namespaces
            code = 1
            try:
                namespaces.set_pdeathsig(signal.SIGKILL)   # cvmfsexec killed: end it all
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
                status = self.run_inner(pid1=True)
                os.write(w, ("w %d\n" % status).encode())
                code = 0
            except Interrupted as e:
                # pid 1: ending takes every client with it; P0 dies by the signal
                os.write(w, ("k %d\n" % e.signum).encode())
            except CvmfsexecError as e:
                sys.stderr.write(format_error("cvmfsexec", e) + "\n")
                os.write(w, ("x %d\n" % e.exit_code).encode())
            except BaseException:
                import traceback
                traceback.print_exc()
                os.write(w, b"x 70\n")
            sys.stderr.flush()
            os._exit(code)
        os.close(w)
        self.target = pid
        self.install_forwarding()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
        status = self.wait_child(pid)
        data = b""
        while True:
            chunk = os.read(r, 64)
            if not chunk:
                break
            data += chunk
        os.close(r)
        kind, _, value = data.decode().strip().partition(" ")
        if kind == "w":
            return int(value)
        if kind == "x":
            return int(value) << 8
        if kind == "k":
            return int(value)
        return status

    def run_inner(self, pid1):
        """As fake root in a fresh mount namespace: new root, mounts, payload, serve."""
        from launcher import mounts
        from launcher.mountrepo import Mounter
        self.build_root()
        if pid1:
            mounts.mount("proc", "/proc", "proc",
                         mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC)
        self.mounter = Mounter(self.base, foreground=True, direct_umount=True, uid=self.uid,
                               private=True)
        try:
            for repo in self.repos:
                self.mount_inside(repo)
            self.open_fifo()
            # from the fork on, a signal is the payload's: pending until we forward it
            signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
            pid = self.start_payload()
            self.target = pid
            self.install_forwarding()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
            status = self.serve(pid, self.handle_inside, reap_all=pid1)
        finally:
            if not pid1:
                # no pid namespace to end the clients: detach the /cvmfs binds and the
                # mounts themselves, so that each client sees its connection end
                for repo in self.mounter.mounted:
                    try:
                        mounts.umount("/cvmfs/" + repo, mounts.MNT_DETACH)
                    except OSError:
                        pass
                self.mounter.umount_all(lazy=True)
        return status

    def run_mode2(self):
        from launcher.mountrepo import Mounter
        from launcher.watchdog import Watchdog
        root = os.geteuid() == 0
        self.mounter = Mounter(self.base, foreground=True, direct_umount=root)
        # before the first mount: a kill -9 from here on leaves nothing mounted
        self.watchdog = Watchdog(self.mounter.mountpoint, direct_umount=root)
        self.watchdog.start()
        self.mounter.watchdog = self.watchdog
        try:
            for repo in self.repos:
                self.mounter.mount(repo)
            self.open_fifo()
            signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)    # as in run_inner
            pid = os.fork()
            if pid == 0:
                try:
                    self.watchdog.close()    # only P0's death may end the watchdog
                    from launcher import mounts, namespaces
                    self.fake_root(namespaces.CLONE_NEWNS)
                    self.build_root()
                    cvmfs_dir = os.path.join(self.base, "dist", "cvmfs")
                    if not os.path.isdir(cvmfs_dir):
                        os.makedirs(cvmfs_dir)
                    mounts.bind(cvmfs_dir, "/cvmfs")
                    self.exec_payload()
                except Interrupted as e:     # forwarded before exec_payload reset it
                    die_by(e.signum)
                except CvmfsexecError as e:
                    sys.stderr.write(format_error("cvmfsexec", e) + "\n")
                    sys.stderr.flush()
                    os._exit(e.exit_code)
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(70)
            if self.cmd_w is not None:
                os.close(self.cmd_w)
                self.cmd_w = None
            self.target = pid
            self.install_forwarding()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
            return self.serve(pid, self.handle_outside, reap_all=False)
        finally:
            self.mounter.umount_all(lazy=True)
            self.watchdog.stop()     # it finds nothing left to do

    # ---- the new root ----------------------------------------------------------
    def build_root(self):
        """tmpfs with a bind of every top-level entry but /cvmfs; pivot_root into it."""
        from launcher import mounts, namespaces
        root = os.path.join(self.tmpdir, "root")
        os.mkdir(root)
        mounts.mount("tmpfs", root, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV, "mode=755")
        mounts.mount(None, root, None, MS_UNBINDABLE)
        for name in sorted(os.listdir("/")):
            if name == "cvmfs":
                continue
            src, dst = "/" + name, os.path.join(root, name)
            try:
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                elif os.path.isdir(src):
                    os.mkdir(dst)
                    mounts.bind(src, dst, recursive=True)
                else:
                    open(dst, "w").close()
                    mounts.bind(src, dst, recursive=False)
            except OSError as e:
                debug("skipping /%s in the new root: %s" % (name, e.strerror))
                _remove_quietly(dst)
        os.mkdir(os.path.join(root, "cvmfs"))
        old = os.path.join(root, ".old-root")
        os.mkdir(old)
        try:
            namespaces.pivot_root(root, old)
        except OSError as e:
            raise CvmfsexecError("pivot_root refused: %s" % e.strerror,
                                 "the root file system must not be a shared ramfs/rootfs "
                                 "(initramfs without pivot_root); run from a normal root "
                                 "or set CVMFSEXEC_MODE")
        os.chdir("/")
        mounts.umount("/.old-root", mounts.MNT_DETACH)
        os.rmdir("/.old-root")
        try:
            os.chdir(self.cwd)
        except OSError:
            pass

    # ---- mounting ---------------------------------------------------------------
    def mount_inside(self, repo):
        from launcher import mounts
        mp = self.mounter.mount(repo)
        target = "/cvmfs/" + repo
        try:
            os.mkdir(target)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        mounts.bind(mp, target, recursive=False)

    def umount_inside(self, repo):
        from launcher import mounts
        target = "/cvmfs/" + repo
        try:
            mounts.umount(target)
        except OSError as e:
            raise CvmfsexecError("cannot unmount %s: %s" % (target, e.strerror),
                                 "stop the processes using it first")
        _remove_quietly(target)
        self.mounter.umount(repo)

    def handle_inside(self, cmd, repo):
        """$CVMFSMOUNT / $CVMFSUMOUNT in modes 3 and 3b: mount inside the namespace."""
        return self.handle(cmd, repo, self.mount_inside, self.umount_inside)

    def handle_outside(self, cmd, repo):
        """The same in mode 2: fusermount outside, seen inside through propagation."""
        def mount(repo):
            check_propagation(os.path.join(self.base, "dist", "cvmfs"))
            self.mounter.mount(repo)
        return self.handle(cmd, repo, mount, self.mounter.umount)

    def handle(self, cmd, repo, mount, umount):
        from launcher import mountconf
        mountconf.check_repo_name(repo)
        if cmd == "MOUNTREPO":
            if repo not in self.mounter.mounted:
                mount(repo)
            return 0
        if cmd == "UMOUNTREPO":
            if repo not in self.mounter.mounted:
                raise CvmfsexecError("cannot unmount %s: it is not mounted" % repo,
                                     "$CVMFSUMOUNT unmounts only repositories this "
                                     "cvmfsexec mounted")
            umount(repo)
            return 0
        sys.stderr.write("cvmfsexec: unrecognized command %s\n" % cmd)
        return 1

    # ---- payload ------------------------------------------------------------
    def open_fifo(self):
        """The command FIFO: we read it; the payload gets a write descriptor (unless -N)."""
        self.cmd_r = os.open(self.cmdfifo, os.O_RDONLY | os.O_NONBLOCK)
        if not self.nonested:
            self.cmd_w = os.open(self.cmdfifo, os.O_WRONLY)

    def start_payload(self):
        pid = os.fork()
        if pid == 0:
            try:
                from launcher import namespaces
                os.close(self.cmd_r)
                namespaces.leave_fakeroot(self.uid, self.gid)
                self.exec_payload()
            except Interrupted as e:
                die_by(e.signum)
            except BaseException as e:
                sys.stderr.write("cvmfsexec: cannot start the command: %s\n" % e)
                sys.stderr.flush()
                os._exit(126)
        if self.cmd_w is not None:
            os.close(self.cmd_w)
            self.cmd_w = None
        return pid

    def exec_payload(self):
        """In the payload process: environment, signals, cwd, then exec (never returns)."""
        if self.mode == "2":
            from launcher import namespaces
            namespaces.leave_fakeroot(self.uid, self.gid)
        env = dict(os.environ)
        for name in ("CVMFSEXEC_CMDFD", "CVMFSEXEC_WAITFIFO", "CVMFSMOUNT", "CVMFSUMOUNT"):
            env.pop(name, None)
        if self.cmd_w is not None:
            os.set_inheritable(self.cmd_w, True)
            env["CVMFSEXEC_CMDFD"] = str(self.cmd_w)
            env["CVMFSEXEC_WAITFIFO"] = self.waitfifo
            env["CVMFSMOUNT"] = os.path.join(self.base, "mountrepo")
            env["CVMFSUMOUNT"] = os.path.join(self.base, "umountrepo")
        if self.cmd_r is not None:
            try:
                os.close(self.cmd_r)
            except OSError:
                pass
        for sig in FORWARDED + TTY_SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD,
                                              signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        try:
            os.chdir(self.cwd)
        except OSError:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvpe(self.command[0], self.command, env)
        except OSError as e:
            sys.stderr.write("cvmfsexec: cannot run %s: %s\n" % (self.command[0], e.strerror))
            sys.stderr.flush()
            os._exit(127 if e.errno == errno.ENOENT else 126)

    # ---- supervision -------------------------------------------------------------
    def install_forwarding(self):
        def forward(signum, frame):
            if self.target:
                try:
                    os.kill(self.target, signum)
                except OSError:
                    pass
        for sig in FORWARDED:
            signal.signal(sig, forward)
        interactive = os.isatty(0)
        for sig in TTY_SIGNALS:
            # a terminal signals the whole foreground process group already
            signal.signal(sig, signal.SIG_IGN if interactive else forward)

    def wait_child(self, pid):
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except OSError as e:       # EINTR on Python < 3.5 semantics; be safe
                if e.errno != errno.EINTR:
                    raise

    def serve(self, pid, handler, reap_all):
        """Answer mount requests until ``pid`` exits; -> its raw wait status.

        reap_all: we are pid 1 of a pid namespace and also reap orphans.
        """
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        buf = b""
        try:
            while True:
                status = self._reap(pid, reap_all)
                if status is not None:
                    return status
                fds = [wake_r] + ([self.cmd_r] if self.cmd_r is not None else [])
                try:
                    ready = select.select(fds, [], [], 5.0)[0]
                except (OSError, select.error):
                    continue
                if wake_r in ready:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except OSError:
                        pass
                if self.cmd_r is not None and self.cmd_r in ready:
                    try:
                        data = os.read(self.cmd_r, 4096)
                    except OSError:
                        data = None
                    if data == b"":
                        # every writer is gone (payload exited or closed CVMFSEXEC_CMDFD)
                        os.close(self.cmd_r)
                        self.cmd_r = None
                    elif data:
                        buf += data
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            self._answer(line.decode("utf-8", "replace"), handler)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _reap(self, pid, reap_all):
        while True:
            try:
                got, status = os.waitpid(-1 if reap_all else pid, os.WNOHANG)
            except OSError as e:
                if e.errno == errno.ECHILD:
                    return 0
                raise
            if got == 0:
                return None
            if got == pid:
                return status
            if not reap_all:
                return None

    def _answer(self, line, handler):
        parts = line.split()
        if len(parts) != 2:
            ret = 1
            sys.stderr.write("cvmfsexec: bad request %r\n" % line)
        else:
            try:
                ret = handler(parts[0], parts[1])
            except CvmfsexecError as e:
                sys.stderr.write(format_error("cvmfsexec", e) + "\n")
                ret = e.exit_code or 1
        reply_fifo(self.waitfifo, ret)


def check_propagation(path):
    """Mode 2: a mount made outside after start reaches /cvmfs only through a shared mount."""
    from launcher import mounts
    best = None
    for e in mounts.mountinfo():
        mp = e.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mountpoint):
                best = e
    if best is not None and not any(o.startswith("shared:") for o in best.optional):
        raise CvmfsexecError(
            "cannot add a repository after start in mode 2: %s is on a private mount, so "
            "a new mount there does not reach the namespace" % path,
            "name every repository on the cvmfsexec command line, or make that mount "
            "shared (as root: mount --make-rshared %s)" % best.mountpoint)


def reply_fifo(path, ret, timeout=10.0):
    """Write the status line to the waiting requester; give up after ``timeout`` s."""
    from launcher.mountrepo import poll_until

    def attempt():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:       # the requester has not opened it yet
                return False
            return True
        try:
            os.write(fd, ("%d\n" % ret).encode())
        except OSError:
            pass
        os.close(fd)
        return True
    poll_until(attempt, timeout)


def _remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    run_main(main, prog="cvmfsexec")
