"""mountrepo: mount one repository at dist/cvmfs/<repo>; also the Mounter cvmfsexec uses.

    mountrepo REPO

Outside cvmfsexec this is mode 1: the client mounts through fusermount (or
mount(2) as root), daemonizes, and keeps serving after mountrepo returns; use
the mount point with a container's bind mount, and umountrepo to end it.

Inside cvmfsexec (CVMFSEXEC_CMDFD and CVMFSEXEC_WAITFIFO set), ``$CVMFSMOUNT
REPO`` writes ``MOUNTREPO REPO`` to the descriptor CVMFSEXEC_CMDFD (a FIFO read
by the cvmfsexec process that can mount) and reads the exit status, one
line, from the FIFO CVMFSEXEC_WAITFIFO -- the reference tools' protocol.
"""

import errno
import os
import signal
import subprocess
import sys
import time

from launcher import backends, envvars, mounts, mountconf, namespaces
from launcher.errors import CvmfsexecError, UsageError, run_main

MOUNT_TIMEOUT = 300     # seconds a client may take to mount (slow proxies, big catalogs)
UMOUNT_TIMEOUT = 20     # seconds a client may take to exit after its unmount


def debug(msg):
    if envvars.get("CVMFSEXEC_DEBUG") not in ("", "0"):
        sys.stderr.write("cvmfsexec: %s\n" % msg)


def poll_until(predicate, timeout, first=0.005, longest=0.1):
    """Call predicate() until it returns true or ``timeout`` s pass; -> its last value."""
    deadline = time.time() + timeout
    delay = first
    while True:
        value = predicate()
        if value or time.time() >= deadline:
            return value
        time.sleep(delay)
        delay = min(delay * 2, longest)


def mount_failed(repo, base, what):
    """The error for a failed mount, after printing the tail of log/<repo>.log."""
    tail = mountconf.log_tail(repo, base)
    if tail:
        sys.stderr.write("--- last lines of %s ---\n%s\n---\n"
                         % (mountconf.log_path(repo, base), tail))
    return CvmfsexecError("failed to mount %s: %s" % (repo, what),
                          "see %s" % mountconf.log_path(repo, base))


class Mounter(object):
    """Mounts repositories at dist/cvmfs/<repo> with one backend; unmounts in reverse order.

    foreground=True: the client runs as our child (``-f``) and gets SIGKILL when
    we die (PR_SET_PDEATHSIG), so a killed cvmfsexec leaves no client behind.
    foreground=False: the client daemonizes (mountrepo's mode 1).
    direct_umount: unmount with umount2() (we are (fake) root of the mount's
    namespace) instead of fusermount -u.
    private: we are in our own mount namespace, where mounting over a copy of a
    mount made outside (e.g. by a standalone mountrepo) is fine.
    watchdog: a launcher.watchdog.Watchdog (mode 2) told of every client, mount
    and unmount, so that it can unmount exactly ours if cvmfsexec is killed.
    """

    def __init__(self, base, foreground=True, direct_umount=True, uid=None, private=False):
        self.base = base
        self.dist = mountconf.dist_dir(base)
        self.foreground = foreground
        self.direct_umount = direct_umount
        self.uid = os.getuid() if uid is None else uid
        self.private = private
        self.backend = backends.choose(base, self.dist)
        self.mounted = []        # repos, most recent first (config repo unmounted last)
        self.clients = {}        # repo -> Popen (foreground only)
        self.watchdog = None
        debug("backend %s" % self.backend.name)

    def mountpoint(self, repo):
        return mountconf.mount_dir(repo, self.base)

    def mount(self, repo):
        """Mount ``repo``; -> mount point.  Raises CvmfsexecError naming the repository."""
        mountconf.check_repo_name(repo)
        if repo in self.mounted:
            return self.mountpoint(repo)
        t0 = time.time()
        conf, cfg = mountconf.write(repo, self.base)
        mp = self.mountpoint(repo)
        created = True
        try:
            os.makedirs(mp)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise CvmfsexecError("cannot create %s: %s" % (mp, e.strerror))
            created = False
        try:
            self._mount_at(repo, conf, cfg, mp)
        except BaseException:
            # mode 2 binds dist/cvmfs onto /cvmfs: a directory left here shows there
            if created:
                _rmdir_quietly(mp)
            raise
        self.mounted.insert(0, repo)
        debug("mounted %s at %s in %.2f s" % (repo, mp, time.time() - t0))
        return mp

    def _mount_at(self, repo, conf, cfg, mp):
        """Start the client on the existing directory ``mp``; return once it is mounted."""
        if not self.private and mounts.is_fuse_mounted(mp):
            self._clear_stale(repo, mp)
        if not self.private and os.geteuid() != 0 and _find_fusermount() is None:
            raise CvmfsexecError("cannot mount %s: neither fusermount3 nor fusermount found on "
                                 "PATH" % repo,
                                 "install fuse3 (it provides the setuid fusermount3) or add "
                                 "its directory to PATH")
        argv, extra = self.backend.command(repo, conf, mp, mountconf.debug_enabled(cfg),
                                           self.foreground)
        env = mountconf.client_environ(uid=self.uid)
        env.update(extra)
        if self.foreground:
            self._start_foreground(repo, argv, env, mp)
        else:
            self._start_daemon(repo, argv, env)

    def _cannot_start(self, repo, e):
        return CvmfsexecError("failed to mount %s: cannot start the %s client: %s"
                              % (repo, self.backend.name, e.strerror),
                              "unset CVMFSEXEC_BACKEND to let cvmfsexec pick a client "
                              "that runs here" if envvars.get("CVMFSEXEC_BACKEND") else None)

    def _clear_stale(self, repo, mp):
        """A mount whose client died (kill -9) answers ENOTCONN: detach it; else refuse.

        ECONNABORTED: the client is still exiting (its connection being aborted).
        """
        try:
            os.stat(mp)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                debug("detaching the stale mount at %s" % mp)
                umount_path(mp, lazy=True, direct=os.geteuid() == 0)
                return
        raise CvmfsexecError("%s is already mounted at %s" % (repo, mp),
                             "unmount it first (umountrepo %s)" % repo)

    def _start_foreground(self, repo, argv, env, mp):
        log = open(mountconf.log_path(repo, self.base), "ab")
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, cwd="/", preexec_fn=_child_of_us)
        except OSError as e:
            raise self._cannot_start(repo, e)
        finally:
            log.close()
        if self.watchdog is not None:
            self.watchdog.client_started(repo, proc.pid)
        # mountinfo costs ~0.2 ms to read: poll it finely, a mount takes 0.1-0.5 s
        try:
            up = poll_until(lambda: proc.poll() is not None or mounts.is_fuse_mounted(mp),
                            MOUNT_TIMEOUT, first=0.002, longest=0.01)
        except BaseException:
            # a signal (cvmfsexec's Interrupted) while the client mounts: it is not in
            # self.clients yet, so umount_all would miss it and what it mounted
            self._abandon(repo, proc, mp)
            raise
        if proc.poll() is not None:
            raise mount_failed(repo, self.base, "client exited with status %s"
                               % proc.returncode)
        if not up:
            proc.kill()
            proc.wait()
            raise mount_failed(repo, self.base, "not mounted after %d s" % MOUNT_TIMEOUT)
        self.clients[repo] = proc
        if self.watchdog is not None:
            entry = mounts.find_mount(mp)        # the topmost mount there: ours
            if entry is not None:
                self.watchdog.mounted(repo, entry.mount_id)

    def _abandon(self, repo, proc, mp):
        """End a client whose mount we gave up on, and its mount if it made one."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if mounts.is_fuse_mounted(mp):
            try:
                umount_path(mp, lazy=True, direct=self.direct_umount)
            except CvmfsexecError:
                return          # the watchdog still knows it: it retries when we are gone
        if self.watchdog is not None:
            self.watchdog.unmounted(repo)

    def _start_daemon(self, repo, argv, env):
        with open(mountconf.log_path(repo, self.base), "ab") as log:
            try:
                rc = subprocess.call(argv, env=env, stdin=subprocess.DEVNULL,
                                     stderr=log, cwd="/")
            except OSError as e:
                raise self._cannot_start(repo, e)
        if rc != 0:
            raise mount_failed(repo, self.base, "client exited with status %d" % rc)

    def umount(self, repo, lazy=False, wait=UMOUNT_TIMEOUT):
        """Unmount ``repo`` and wait for its client (SIGKILL after ``wait`` s)."""
        mp = self.mountpoint(repo)
        if self.watchdog is not None:
            self.watchdog.unmounting(repo)
        umount_path(mp, lazy, self.direct_umount)
        if repo in self.mounted:
            self.mounted.remove(repo)
        proc = self.clients.pop(repo, None)
        if proc is not None:
            if not poll_until(lambda: proc.poll() is not None, wait):
                proc.kill()
            proc.wait()
        if self.watchdog is not None:
            self.watchdog.unmounted(repo)
        _rmdir_quietly(mp)

    def umount_all(self, lazy=True):
        """Unmount everything (most recent first), then make sure no client is left."""
        failures = []
        for repo in list(self.mounted):
            try:
                # lazily detached mounts end when their last user goes: do not wait long
                self.umount(repo, lazy, wait=2.0 if lazy else UMOUNT_TIMEOUT)
            except CvmfsexecError as e:
                failures.append(e.message)
        for repo, proc in list(self.clients.items()):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.clients.clear()
        return failures


def _rmdir_quietly(path):
    # rmdir: only an empty directory that is no mount point goes, never content
    try:
        os.rmdir(path)
    except OSError:
        pass


def _child_of_us():
    # in the client, between fork and exec: die with the process that started it
    namespaces.set_pdeathsig(signal.SIGKILL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def umount_path(mp, lazy=False, direct=None):
    """Unmount mp with umount2() when we are (fake) root, else fusermount3 -u [-z]."""
    if direct is None:
        direct = os.geteuid() == 0
    if direct:
        try:
            mounts.umount(mp, mounts.MNT_DETACH if lazy else 0)
            return
        except OSError as e:
            if e.errno == errno.EINVAL and not mounts.find_mount(mp):
                raise CvmfsexecError("%s is not mounted" % mp)
            raise CvmfsexecError("cannot unmount %s: %s" % (mp, e.strerror),
                                 "it is busy: stop the processes using it, or use -z")
    helper = _find_fusermount()
    if helper is None:
        raise CvmfsexecError("cannot unmount %s: neither fusermount3 nor fusermount found" % mp,
                             "install fuse3 (fusermount3) or add it to PATH")
    with open(os.devnull, "wb") as null:
        p = subprocess.Popen([helper, "-u"] + (["-z"] if lazy else []) + [mp],
                             stdout=null, stderr=subprocess.PIPE)
        err = p.communicate()[1].decode("utf-8", "replace").strip()
    if p.returncode != 0:
        raise CvmfsexecError("cannot unmount %s: %s" % (mp, err or "fusermount failed"),
                             "it may be busy: stop the processes using it, or use -z")


def _find_fusermount():
    # imported when needed: launcher.fuse.mount brings socket and friends (start-up cost)
    from launcher.fuse.mount import find_fusermount
    return find_fusermount()


def request(command, repo):
    """Send COMMAND REPO to the cvmfsexec outside through CVMFSEXEC_CMDFD; -> its status."""
    fd_s = envvars.get("CVMFSEXEC_CMDFD")
    fifo = envvars.get("CVMFSEXEC_WAITFIFO")
    try:
        fd = int(fd_s)
        os.write(fd, ("%s %s\n" % (command, repo)).encode())
    except (ValueError, OSError):
        raise CvmfsexecError("mounting from inside this cvmfsexec is disabled "
                             "(descriptor CVMFSEXEC_CMDFD=%s is closed)" % fd_s,
                             "the payload closed it or cvmfsexec ran with -N")
    os.close(fd)
    try:
        with open(fifo) as f:
            line = f.readline().strip()
    except (IOError, OSError) as e:
        raise CvmfsexecError("no answer from cvmfsexec on %s: %s" % (fifo, e.strerror))
    try:
        return int(line)
    except ValueError:
        raise CvmfsexecError("cvmfsexec gave no status for %s %s" % (command, repo))


def inside_cvmfsexec():
    return bool(envvars.get("CVMFSEXEC_CMDFD") and envvars.get("CVMFSEXEC_WAITFIFO"))


USAGE = ("usage: mountrepo REPO\n"
         "  mount REPO at dist/cvmfs/REPO (inside cvmfsexec: ask it to, via $CVMFSMOUNT)\n"
         "  -v  print the version and exit\n")


def main(argv):
    if argv and argv[0] in ("-v", "--version"):
        from launcher import VERSION
        sys.stdout.write("mountrepo %s\n" % VERSION)
        return 0
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError("expected one repository name", USAGE.splitlines()[0])
    repo = mountconf.check_repo_name(argv[0])
    if inside_cvmfsexec():
        if not envvars.get("CVMFSMOUNT"):
            raise CvmfsexecError("mount within cvmfsexec only works through $CVMFSMOUNT")
        return request("MOUNTREPO", repo)
    base = mountconf.base_dir()
    mountconf.check_dist(base)
    mounter = Mounter(base, foreground=False, direct_umount=os.geteuid() == 0)
    mounter.mount(repo)
    return 0


if __name__ == "__main__":
    run_main(main, prog="mountrepo")
