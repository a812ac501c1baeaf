"""Mode 2's watchdog: unmount what this run mounted when cvmfsexec dies, even by kill -9.

In mode 2 the repositories are mounted with fusermount in the host's mount
namespace, so the kernel does not take them away when cvmfsexec dies: a
``kill -9`` of the job's process group would leave dead mounts (ENOTCONN)
under dist/cvmfs.  The reference bash cvmfsexec guards against that with a
process outside the job's process group; this is ours.

cvmfsexec forks the watchdog before its first mount.  The watchdog calls
setsid() (so a kill of the process group, or the terminal's SIGHUP, misses
it), keeps only the read end of a pipe and follows what cvmfsexec tells it,
one line per event:

    client REPO PID STARTTIME   a client was started for REPO (pending)
    mounted REPO MOUNT_ID       REPO is mounted; MOUNT_ID as in mountinfo
    umount REPO                 cvmfsexec is about to unmount REPO (pending)
    forget REPO                 REPO is unmounted and its client has ended

Only cvmfsexec holds the write end (it is close-on-exec, and the payload's
fork closes it), so end of file means cvmfsexec has ended, normally or not.
Then the watchdog SIGKILLs the clients it was told about that still run (same
pid and start time, so a reused pid is left alone), lazily unmounts every
repository it still tracks and exits.  After a normal exit cvmfsexec has
unmounted everything and said so: nothing is left to do.

Another cvmfsexec run sharing the dist may mount at the same paths (after
detaching our dead mount, say), so a mount is detached only when it is ours:
the topmost mount at the path still has the mount ID we were told; or, while
the repository is pending (no ID, or an unmount under way), the mount is dead
(ENOTCONN) once our clients are gone -- a live one belongs to someone else.
The kernel reuses freed mount IDs, which is why an unmount makes the
repository pending before it starts.
"""

import ctypes
import errno
import os
import signal
import time

PR_SET_NAME = 15
NAME = b"cvmfsexec-watch"    # /proc/PID/comm (15 bytes at most): what ps shows
IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM,
           signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)
KILL_WAIT = 5.0              # seconds for SIGKILLed clients to go


def process_start_time(pid):
    """Start time of ``pid`` in clock ticks (/proc/PID/stat field 22), or None if gone.

    A zombie counts as gone: it serves nothing and holds no descriptor.
    """
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except (IOError, OSError):
        return None
    fields = stat[stat.rfind(b")") + 2:].split()    # after "pid (comm) "
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


class Watchdog(object):
    """cvmfsexec's end of the watchdog: start() forks it; Mounter reports to it.

    mountpoint: repo -> path; direct_umount: umount2(MNT_DETACH) (we are root)
    instead of fusermount -uz.
    """

    def __init__(self, mountpoint, direct_umount):
        self.mountpoint = mountpoint
        self.direct_umount = direct_umount
        self.pid = None
        self.fd = None

    def start(self):
        r, w = os.pipe()         # not inheritable (PEP 446): exec'd programs never get them
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(w)
                code = serve(r, self.mountpoint, self.direct_umount)
            except BaseException:
                import traceback
                _say("internal error (a bug): %s" % traceback.format_exc())
            finally:
                os._exit(code)
        os.close(r)
        self.pid, self.fd = pid, w
        return pid

    def _send(self, line):
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except OSError as e:     # the watchdog is gone: go on, without the safety net
            _say("gone (%s): a kill -9 of cvmfsexec may now leave mounts behind"
                 % e.strerror)
            self.close()

    def client_started(self, repo, pid):
        # still our unreaped child: the pid cannot have been reused yet
        self._send("client %s %d %s" % (repo, pid, process_start_time(pid)))

    def mounted(self, repo, mount_id):
        self._send("mounted %s %d" % (repo, mount_id))

    def unmounting(self, repo):
        self._send("umount %s" % repo)

    def unmounted(self, repo):
        self._send("forget %s" % repo)

    def close(self):
        """Close our end (in a forked payload too: it must not keep the watchdog waiting)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def stop(self, timeout=10.0):
        """Normal end: close our end and reap the watchdog (it has nothing left to do)."""
        self.close()
        if self.pid is None:
            return
        deadline = time.time() + timeout
        delay = 0.001
        while True:
            try:
                got = os.waitpid(self.pid, os.WNOHANG)[0]
            except OSError:
                got = self.pid        # ECHILD: already reaped
            if got or time.time() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.pid = None


# --------------------------------------------------------------------------
# The watchdog process


def serve(rfd, mountpoint, direct_umount):
    """In the forked watchdog: detach, follow the events until EOF, clean up; -> exit code."""
    detach(rfd)
    tracked, clients = follow(rfd)
    kill_clients(clients)
    failures = unmount_tracked(tracked, mountpoint, direct_umount)
    return 1 if failures else 0


def detach(rfd):
    """Own session, no terminal signals, stdin/stdout on /dev/null, only ``rfd`` and stderr."""
    os.setsid()
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    try:
        from launcher import namespaces
        name = ctypes.create_string_buffer(NAME)
        namespaces.prctl(PR_SET_NAME, ctypes.addressof(name))
    except (OSError, AttributeError):
        pass                # ps shows "python3": only cosmetic
    null = os.open(os.devnull, os.O_RDWR)
    # stdout may be a pipe its reader waits on; stderr stays for error messages
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    keep = (0, 1, 2, rfd)
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 256)
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    os.chdir("/")      # keep no directory busy


def follow(rfd):
    """Read events until EOF; -> ([(repo, mount id or None)], {repo: (pid, start time)}).

    The list is in the order the repositories were first mounted.
    """
    tracked, clients, order = {}, {}, []
    buf = b""
    while True:
        try:
            data = os.read(rfd, 4096)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            data = b""
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                apply_event(line.decode("ascii", "replace").split(), tracked, clients, order)
            except ValueError:
                _say("ignoring the garbled event %r" % line)
    os.close(rfd)
    return [(repo, tracked[repo]) for repo in order if repo in tracked], clients


def apply_event(words, tracked, clients, order):
    if len(words) < 2:
        return
    kind, repo = words[0], words[1]
    if kind == "client" and len(words) == 4:
        tracked[repo] = None
        clients[repo] = (int(words[2]), None if words[3] == "None" else int(words[3]))
    elif kind == "mounted" and len(words) == 3:
        tracked[repo] = int(words[2])
    elif kind == "umount":
        tracked[repo] = None
    elif kind == "forget":
        tracked.pop(repo, None)
        clients.pop(repo, None)
        return
    if repo in tracked and repo not in order:
        order.append(repo)


def kill_clients(clients):
    """SIGKILL the clients that still run (the same process: same start time); wait for them."""
    alive = []
    for pid, started in clients.values():
        if started is not None and process_start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                alive.append((pid, started))
            except OSError:
                pass
    deadline = time.time() + KILL_WAIT
    while alive and time.time() < deadline:
        time.sleep(0.01)
        alive = [(p, t) for p, t in alive if process_start_time(p) == t]


def unmount_tracked(tracked, mountpoint, direct_umount):
    """Lazily unmount each tracked repository that is still ours, last mounted first."""
    from launcher import mounts
    from launcher.errors import CvmfsexecError
    from launcher.mountrepo import umount_path
    failures = []
    for repo, mount_id in reversed(tracked):
        mp = mountpoint(repo)
        try:
            entry = mounts.find_mount(mp)
        except (IOError, OSError):
            entry = None
        if entry is None or not (entry.fstype == "fuse" or entry.fstype.startswith("fuse.")):
            continue
        ours = entry.mount_id == mount_id if mount_id is not None else is_dead(mp)
        if not ours:
            continue
        try:
            umount_path(mp, lazy=True, direct=direct_umount)
        except CvmfsexecError as e:
            _say("cvmfsexec ended but %s stays mounted: %s" % (mp, e.message))
            failures.append(mp)
        else:
            _debug("cvmfsexec ended: lazily unmounted %s" % mp)
    return failures


def is_dead(mp):
    """True if the FUSE mount at ``mp`` has lost its server (ENOTCONN; ECONNABORTED while
    the connection is being torn down)."""
    try:
        os.stat(mp)
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def _say(msg):
    try:
        os.write(2, ("cvmfsexec: watchdog: %s\n" % msg).encode("utf-8", "replace"))
    except OSError:
        pass


def _debug(msg):
    from launcher import envvars
    if envvars.get("CVMFSEXEC_DEBUG") not in ("", "0"):
        _say(msg)

