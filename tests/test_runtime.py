"""cvmfsexec, mountrepo, umountrepo end to end: real namespaces, real FUSE mounts of
repositories published with builder.publish and served on 127.0.0.1, run as root and
as an unprivileged user.  Each mode is forced with CVMFSEXEC_MODE so all of them run
on this kernel; mode 3b is also reached by probing, under a /proc masked the way
docker masks it.
"""
import os
import signal
import subprocess
import sys
import tempfile
import shutil

import pytest

from conftest import grant_fuse_access, unpriv_user, HttpServer, wait_for
import runtime_util

pytestmark = [pytest.mark.userns, pytest.mark.fuse]

R1, R2, RCFG = "t1.test.local", "t2.test.local", "cfg.test.local"
# None: stage with builder.artifact.stage(), whose commands find python3 on PATH (the
# node's own; the unprivileged user cannot reach the venv's interpreter under /root).
# A path: runtime_util's stand-in scripts run that interpreter.
RUNTIME_PYTHON = None
NODE_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
HELLO = "hello from t1\n"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two repositories on a real HTTP server: t1 (files, nested catalog, symlink), t2."""
    from builder.publish import publish
    top = tmp_path_factory.mktemp("published")
    src = top / "src"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_text(HELLO)
    (src / "sub" / ".cvmfscatalog").write_text("")
    (src / "sub" / "n.txt").write_text("nested\n")
    os.symlink("hello.txt", str(src / "link"))
    out = top / "pub"
    publish(str(src), R1, str(out))
    publish(str(src), R2, str(out))
    # a configuration repository: it holds the key of t1 (t1's dist does not)
    cfg = top / "cfgsrc" / "etc" / "cvmfs"
    (cfg / "domain.d").mkdir(parents=True)
    (cfg / "keys").mkdir()
    (cfg / "domain.d" / "test.local.conf").write_text(
        "CVMFS_KEYS_DIR=/cvmfs/%s/etc/cvmfs/keys\n" % RCFG)
    shutil.copy(str(out / "keys" / (R1 + ".pub")), str(cfg / "keys"))
    publish(str(top / "cfgsrc"), RCFG, str(out))
    server = HttpServer(str(out / "srv"), top)
    yield {"url": server.url + "/cvmfs/@fqrn@", "keys": str(out / "keys"), "srv": str(out / "srv")}
    server.stop()


class Base(object):
    """A staged runtime BASE, owned by the user that runs it."""

    def __init__(self, published, user, keys=(R1, R2), **kw):
        self.top = tempfile.mkdtemp(prefix="cvmfsexec-rt-")
        os.chmod(self.top, 0o755)
        self.path = os.path.join(self.top, "base")
        self.user = user
        runtime_util.make_base(
            self.path, [(k, os.path.join(published["keys"], k + ".pub")) for k in keys],
            server_url=published["url"], owner=user, python=RUNTIME_PYTHON, **kw)

    def run(self, cmd, args, env=None, **kw):
        """Run BASE/cmd args as the base's user; -> CompletedProcess (text)."""
        return subprocess.run([os.path.join(self.path, cmd)] + list(args),
                              **self.popen_kw(env, kw))

    def popen(self, cmd, args, env=None, **kw):
        return subprocess.Popen([os.path.join(self.path, cmd)] + list(args),
                                **self.popen_kw(env, kw))

    def popen_kw(self, env, kw):
        # TMPDIR inside the base: what a kill -9 leaves of the session directory goes too
        e = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "SHELL": "/bin/sh",
             "HOME": self.top, "TMPDIR": self.path}
        e.update(env or {})
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("universal_newlines", True)
        kw.setdefault("cwd", self.top)
        if self.user is not None:
            uid, gid = self.user
            kw["preexec_fn"] = lambda: (os.setgroups([]), os.setgid(gid), os.setuid(uid))
        return dict(env=e, **kw)

    def clients(self):
        """pids of client processes serving this base."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if "launcher.client" in cmd and self.path in cmd:
                found.append(int(pid))
        return found

    def host_mounts(self):
        with open("/proc/self/mountinfo") as f:
            return [l for l in f if self.path in l]

    def fuse_mounts(self):
        """Mount points of the FUSE mounts of this base in the host namespace."""
        return [l.split()[4] for l in self.host_mounts()
                if l.split(" - ")[1].split()[0].split(".")[0] == "fuse"]

    def watchdogs(self):
        """pids of mode 2 watchdogs (launcher.watchdog) of this base."""
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open("/proc/%s/comm" % pid) as f:
                    if f.read().strip() != "cvmfsexec-watch":
                        continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if self.path.encode() in f.read():
                        found.append(int(pid))
            except (OSError, IOError):
                continue
        return found

    def cleanup(self):
        for pid in self.clients():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for line in reversed(self.host_mounts()):
            subprocess.run(["umount", "-l", line.split()[4]], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture(params=["root", "user"])
def who(request):
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("needs root")
        return None
    if os.geteuid() == 0:
        grant_fuse_access()
        return unpriv_user()
    return None


@pytest.fixture
def make_base(published):
    bases = []

    def make(user=None, source=None, **kw):
        b = Base(source or published, user, **kw)
        bases.append(b)
        return b
    yield make
    for b in bases:
        b.cleanup()


def assert_clean(base):
    wait_for(lambda: not base.clients(), 20, "client processes to exit")
    assert base.host_mounts() == []
    assert base.watchdogs() == []       # a normal exit reaps the mode 2 watchdog


def assert_clean_after_kill(base):
    """After a kill -9 the mode 2 watchdog needs a moment: poll, then check everything."""
    wait_for(lambda: not (base.clients() or base.fuse_mounts() or base.watchdogs()), 20,
             "clients, FUSE mounts and watchdogs of %s to go" % base.path)
    assert base.host_mounts() == []


SCRIPT = r"""
cat /cvmfs/%(r1)s/hello.txt
cat /cvmfs/%(r1)s/sub/n.txt
readlink /cvmfs/%(r1)s/link
id -u
$CVMFSMOUNT %(r2)s; echo "mount=$?"
cat /cvmfs/%(r2)s/hello.txt
$CVMFSUMOUNT %(r2)s; echo "umount=$?"
ls /cvmfs
exit 42
""" % {"r1": R1, "r2": R2}


@pytest.mark.parametrize("mode", ["3", "3b", "2"])
def test_each_mode_lists_reads_and_nests(make_base, who, mode):
    base = make_base(who)
    env = {"CVMFSEXEC_MODE": mode}
    if mode == "2" and who is None:
        # nested mounts in mode 2 propagate only through a shared mount: give the run one
        cmd = ["unshare", "-m", "--propagation", "shared", "sh", "-c",
               'mount --make-rshared / && exec "$0" "$@"',
               os.path.join(base.path, "cvmfsexec"), R1, "--", "sh", "-c", SCRIPT]
        r = subprocess.run(cmd, **base.popen_kw(env, {}))
    else:
        r = base.run("cvmfsexec", [R1, "--", "sh", "-c", SCRIPT], env=env)
    out = r.stdout.splitlines()
    assert r.returncode == 42, r.stderr
    uid = os.geteuid() if who is None else who[0]
    assert out[:4] == ["hello from t1", "nested", "hello.txt", str(uid)], r.stderr
    if mode == "2" and who is not None:
        # private host mount: the nested mount is refused with the fix, not silently lost
        assert "mount=1" in out and "make-rshared" in r.stderr
    else:
        assert out[4:8] == ["mount=0", "hello from t1", "umount=0", R1], r.stderr
    assert_clean(base)


def test_namespaces_exit_codes_args_stdin(make_base):
    base = make_base(None)
    script = ('for a in "$@"; do printf "[%s]" "$a"; done; echo; '
              'readlink /proc/self/ns/mnt /proc/self/ns/user; cat; pwd; ls -A /cvmfs | wc -l')
    r = base.run("cvmfsexec", ["--", "sh", "-c", script, "x", "a  b", "", " c "],
                 input="piped stdin\n", env={"CVMFSEXEC_MODE": "3"})
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "[a  b][][ c ]"
    assert out[1] != os.readlink("/proc/self/ns/mnt")
    assert out[2] != os.readlink("/proc/self/ns/user")
    assert out[3:6] == ["piped stdin", base.top, "0"]
    for code in (0, 1, 42):
        r = base.run("cvmfsexec", ["--", "sh", "-c", "exit %d" % code])
        assert r.returncode == code, r.stderr
    r = base.run("cvmfsexec", ["--", "sh", "-c", "kill -USR1 $$"])
    assert r.returncode == -signal.SIGUSR1
    r = base.run("cvmfsexec", ["--", "no-such-program-xyz"])
    assert r.returncode == 127 and "no-such-program-xyz" in r.stderr
    r = base.run("cvmfsexec", ["-v"])
    assert r.returncode == 0 and r.stdout.startswith("cvmfsexec ")


def test_no_nested_option_and_closed_descriptor(make_base):
    base = make_base(None)
    r = base.run("cvmfsexec", ["-N", R1, "--", "sh", "-c",
                               'echo "[$CVMFSMOUNT][$CVMFSEXEC_CMDFD]"; ls /cvmfs'])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[][]", R1]
    r = base.run("cvmfsexec", [R1, "--", "bash", "-c",
                               'exec {CVMFSEXEC_CMDFD}>&-; $CVMFSMOUNT %s; echo "rc=$?"; '
                               'ls /cvmfs' % R2])
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["rc=1", R1]
    assert "disabled" in r.stderr


@pytest.mark.parametrize("mode", ["3", "3b", "2"])
def test_kill9_of_process_group_leaves_nothing(make_base, who, mode):
    # mode 2 mounts in the host namespace, which outlives cvmfsexec: its watchdog, in
    # a session of its own, must unmount them (and end the clients)
    base = make_base(who)
    p = base.popen("cvmfsexec", [R1, R2, "--", "sh", "-c", "echo ready; exec sleep 600"],
                   env={"CVMFSEXEC_MODE": mode}, start_new_session=True)
    try:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
        assert len(base.clients()) == 2
        watchdogs = base.watchdogs()
        if mode == "2":
            assert len(base.fuse_mounts()) == 2
            assert len(watchdogs) == 1 and os.getsid(watchdogs[0]) == watchdogs[0]
        else:
            assert watchdogs == []
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)     # the payload too
            p.wait()
    assert_clean_after_kill(base)


def test_sigterm_reaches_the_command_and_cleans_up(make_base):
    base = make_base(None)
    p = base.popen("cvmfsexec", [R1, "--", "sh", "-c",
                                 "trap 'echo got TERM; exit 7' TERM; echo ready; "
                                 "while :; do sleep 0.05; done"])
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out) == (7, "got TERM\n"), err
    assert_clean(base)
    p = base.popen("cvmfsexec", [R1, "--", "sh", "-c", "echo ready; exec sleep 600"])
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGTERM
    assert_clean(base)


def test_two_at_once_share_a_cache(make_base):
    base = make_base(None)
    cmd = [R1, R2, "--", "sh", "-c", "cat /cvmfs/%s/hello.txt /cvmfs/%s/sub/n.txt" % (R1, R2)]
    procs = [base.popen("cvmfsexec", cmd) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out == HELLO + "nested\n"
    cache = os.path.join(base.path, "dist", "var", "lib", "cvmfs", "shared")
    assert os.path.isdir(cache)
    assert_clean(base)


def test_errors_are_one_line_with_the_fix(make_base):
    base = make_base(None, keys=(R2,))     # t1's key missing: its signature cannot verify
    r = base.run("cvmfsexec", ["bad/name", "--", "true"])
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "invalid repository name" in r.stderr
    r = base.run("cvmfsexec", [R1, "--", "true"])
    assert r.returncode != 0
    assert "failed to mount %s" % R1 in r.stderr
    assert "last lines of" in r.stderr and "%s.log" % R1 in r.stderr
    assert_clean(base)
    shutil.rmtree(os.path.join(base.path, "dist", "etc"))
    r = base.run("cvmfsexec", [R2, "--", "true"])
    assert r.returncode != 0 and "dist is missing" in r.stderr


def test_no_user_namespaces_names_the_sysctl(make_base):
    base = make_base(None)
    cmd = ["unshare", "-Ur", "sh", "-c",
           'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$@"',
           os.path.join(base.path, "cvmfsexec"), "--", "true"]
    r = subprocess.run(cmd, **base.popen_kw({}, {}))
    assert r.returncode == 1
    assert "user namespaces are not available" in r.stderr
    assert "user.max_user_namespaces" in r.stderr


@pytest.mark.root
def test_masked_proc_is_probed_as_mode_3b(make_base):
    if os.geteuid() != 0:
        pytest.skip("masking /proc in a private mount namespace needs root")
    base = make_base(None)
    # what docker does by default: /proc/sys read-only, files and dirs covered
    mask = ("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
            "mount -t tmpfs -o ro tmpfs /proc/scsi 2>/dev/null; exec \"$0\" \"$@\"")
    cmd = ["unshare", "-m", "sh", "-c", mask, os.path.join(base.path, "cvmfsexec"), R1, "--",
           "sh", "-c", "cat /cvmfs/%s/hello.txt; echo $$" % R1]
    r = subprocess.run(cmd, **base.popen_kw({"CVMFSEXEC_DEBUG": "1"}, {"timeout": 60}))
    assert r.returncode == 0, r.stderr
    assert "mode 3b" in r.stderr
    assert r.stdout.splitlines()[0] == HELLO.strip()
    assert r.stdout.splitlines()[1] != "2"      # no pid namespace
    assert_clean(base)


def test_mountrepo_umountrepo_standalone(make_base, who):
    base = make_base(who)
    mp = os.path.join(base.path, "dist", "cvmfs", R1)
    r = base.run("mountrepo", [R1])
    assert r.returncode == 0, r.stderr
    try:
        # read as the mounting user: without allow_other nobody else may
        r = subprocess.run(["cat", os.path.join(mp, "hello.txt")], **base.popen_kw({}, {}))
        assert r.stdout == HELLO, r.stderr
        assert len(base.clients()) == 1
        r = base.run("umountrepo", [R1])
        assert r.returncode == 0, r.stderr
        assert "Unmounting %s" % mp in r.stdout
        assert not os.path.exists(mp)
        assert_clean(base)
        for args in ([R1], [R2]):
            assert base.run("mountrepo", args).returncode == 0
        r = base.run("umountrepo", ["-z", "-a"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("Lazily unmounting") == 2
        assert_clean(base)
        r = base.run("umountrepo", [R1])
        assert r.returncode == 1 and "not mounted" in r.stderr
    finally:
        base.cleanup()


def test_runs_on_the_oldest_python(make_base, published):
    from conftest import pyenv_pythons
    old = [p for v, p in pyenv_pythons().items() if v.startswith("3.6.")]
    if not old or os.geteuid() != 0:
        pytest.skip("needs root and Python 3.6 from pyenv")
    global RUNTIME_PYTHON
    saved, RUNTIME_PYTHON = RUNTIME_PYTHON, old[0]
    try:
        base = make_base(None)
    finally:
        RUNTIME_PYTHON = saved
    for mode in ("3", "2"):
        r = base.run("cvmfsexec", [R1, "--", "sh", "-c", "cat /cvmfs/%s/hello.txt; exit 3" % R1],
                     env={"CVMFSEXEC_MODE": mode})
        assert (r.returncode, r.stdout) == (3, HELLO), r.stderr
    assert_clean(base)


def test_mode2_after_kill9_the_next_run_clears_the_stale_mount(make_base, who):
    # mode 2 mounts in the host namespace: when the watchdog dies too (a batch system
    # killing every process of the job), a kill -9 kills the clients (parent-death
    # signal) but nothing unmounts; the next run must not trip over the dead mount.
    base = make_base(who)
    env = {"CVMFSEXEC_MODE": "2"}
    p = base.popen("cvmfsexec", [R1, "--", "sh", "-c", "echo ready; exec sleep 600"],
                   env=env, start_new_session=True)
    try:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
        for pid in base.watchdogs():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not base.watchdogs(), 10, "the watchdog to die")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)     # the payload too
            p.wait()
    wait_for(lambda: not base.clients(), 20, "clients to die with cvmfsexec")
    assert base.fuse_mounts() == [os.path.join(base.path, "dist", "cvmfs", R1)]
    r = base.run("cvmfsexec", [R1, "--", "cat", "/cvmfs/%s/hello.txt" % R1], env=env)
    assert (r.returncode, r.stdout) == (0, HELLO), r.stderr
    assert_clean(base)


def test_mode2_watchdog_unmounts_only_what_its_run_mounted(make_base, who):
    # two mode 2 runs share a dist: A mounts R1, adds R2 and removes R1 from inside,
    # then B mounts R1.  kill -9 of A must take R2 only, not B's R1.
    if os.geteuid() != 0:
        pytest.skip("needs root to make the base a shared mount (for $CVMFSMOUNT)")
    base = make_base(who)
    # mounts added after start reach the namespace only through a shared mount
    subprocess.run(["mount", "--bind", base.path, base.path], check=True)
    subprocess.run(["mount", "--make-shared", base.path], check=True)
    env = {"CVMFSEXEC_MODE": "2"}
    script = ("$CVMFSMOUNT %s && $CVMFSUMOUNT %s && cat /cvmfs/%s/sub/n.txt && echo ready "
              "&& exec sleep 600" % (R2, R1, R2))
    a = base.popen("cvmfsexec", [R1, "--", "sh", "-c", script], env=env,
                   start_new_session=True)
    b = None
    try:
        assert a.stdout.readline() == "nested\n", a.stderr.read()
        assert a.stdout.readline() == "ready\n"
        b = base.popen("cvmfsexec", [R1, "--", "sh", "-c", "echo ready; exec sleep 600"],
                       env=env, start_new_session=True)
        assert b.stdout.readline() == "ready\n", b.stderr.read()
        mp1, mp2 = [os.path.join(base.path, "dist", "cvmfs", r) for r in (R1, R2)]
        assert sorted(base.fuse_mounts()) == [mp1, mp2]
        assert len(base.watchdogs()) == 2
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
        wait_for(lambda: base.fuse_mounts() == [mp1] and len(base.clients()) == 1
                 and len(base.watchdogs()) == 1, 20, "A's mount, client and watchdog to go")
        assert b.poll() is None
        r = subprocess.run(["cat", os.path.join(mp1, "hello.txt")], **base.popen_kw({}, {}))
        assert r.stdout == HELLO, r.stderr
        b.send_signal(signal.SIGTERM)
        b.communicate(timeout=30)
        assert b.returncode == -signal.SIGTERM
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        subprocess.run(["umount", "-l", base.path], check=True)
    assert_clean(base)


FAKE_CVMFS2 = """#!/bin/sh
# test double for dist's cvmfs2: records how it was started, then serves the mount
# with the builtin client (a real cvmfs2 cannot be built here)
[ "$1" = --version ] && { echo "CernVM-FS version 2.12.0"; exit 0; }
echo "lib=$CVMFS_LIBRARY_PATH ld=$LD_LIBRARY_PATH args=$*" >> %(base)s/log/cvmfs2-double.args
PYTHONPATH=%(base)s exec %(python)s -m launcher.client "$@"
"""


def test_dist_cvmfs2_is_used_when_it_starts_else_builtin(make_base):
    base = make_base(None)
    dist = os.path.join(base.path, "dist")
    binary = os.path.join(dist, "usr", "bin", "cvmfs2")
    os.makedirs(os.path.dirname(binary))
    os.makedirs(os.path.join(dist, "usr", "lib64"))
    runtime_util.write(binary, FAKE_CVMFS2 % {"base": base.path, "python": NODE_PYTHON},
                       0o755)
    cmd = [R1, "--", "cat", "/cvmfs/%s/hello.txt" % R1]
    r = base.run("cvmfsexec", cmd, env={"CVMFSEXEC_DEBUG": "1"})
    assert (r.returncode, r.stdout) == (0, HELLO), r.stderr
    assert "backend cvmfs2" in r.stderr
    with open(os.path.join(base.path, "log", "cvmfs2-double.args")) as f:
        line = f.read()
    lib = os.path.join(dist, "usr", "lib64")
    assert line.startswith("lib=%s ld=%s:%s" % (lib, lib, os.path.join(dist, "lib64")))
    assert "-f %s %s" % (R1, os.path.join(dist, "cvmfs", R1)) in line
    # a binary for another machine does not start: the builtin client takes over
    with open(binary, "wb") as f:
        f.write(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    r = base.run("cvmfsexec", cmd, env={"CVMFSEXEC_DEBUG": "1"})
    assert (r.returncode, r.stdout) == (0, HELLO), r.stderr
    assert "backend builtin" in r.stderr
    r = base.run("cvmfsexec", cmd, env={"CVMFSEXEC_BACKEND": "cvmfs2"})
    assert r.returncode != 0 and "failed to mount %s" % R1 in r.stderr
    assert_clean(base)


def test_mode1_without_fusermount_says_what_to_install(make_base):
    user = unpriv_user()
    grant_fuse_access()
    base = make_base(user)
    bindir = os.path.join(base.top, "bin")
    os.mkdir(bindir)
    os.symlink(shutil.which("dirname"), os.path.join(bindir, "dirname"))
    os.symlink(NODE_PYTHON, os.path.join(bindir, "python3"))
    r = base.run("mountrepo", [R1], env={"PATH": bindir})
    assert r.returncode == 1
    assert "neither fusermount3 nor fusermount" in r.stderr and "install fuse3" in r.stderr
    assert base.clients() == []


def test_inaccessible_dev_fuse_is_reported_with_the_fix(make_base):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to hide /dev/fuse in a private mount namespace")
    uid, gid = unpriv_user()
    base = make_base((uid, gid))
    fake = os.path.join(base.top, "fuse-0600")
    open(fake, "w").close()
    os.chmod(fake, 0o600)
    script = ('mount --bind "$0" /dev/fuse && exec setpriv --reuid=%d --regid=%d '
              '--clear-groups "$@"' % (uid, gid))
    kw = base.popen_kw({"CVMFSEXEC_MODE": "3"}, {})
    kw.pop("preexec_fn", None)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, fake,
                        os.path.join(base.path, "cvmfsexec"), R1, "--", "true"], **kw)
    assert r.returncode == 1
    assert "/dev/fuse is not accessible" in r.stderr and "chmod 0666 /dev/fuse" in r.stderr


def test_configuration_repository_is_mounted_first_and_used(make_base):
    # the dist has only the config repository's key; t1's key comes from inside it,
    # through domain.d/test.local.conf's relocated CVMFS_KEYS_DIR=/cvmfs/...
    base = make_base(None, keys=(RCFG,), config_repo=RCFG)
    for mode in ("3", "3b"):
        r = base.run("cvmfsexec", [R1, "--", "sh", "-c", "ls /cvmfs; cat /cvmfs/%s/hello.txt"
                                   % R1], env={"CVMFSEXEC_MODE": mode})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [RCFG, R1, HELLO.strip()]
    conf = os.path.join(base.path, "dist", "var", "run", "cvmfs", R1 + ".conf")
    with open(conf) as f:
        assert "CVMFS_KEYS_DIR=%s/dist/cvmfs/%s/etc/cvmfs/keys\n" % (base.path, RCFG) \
            in f.read()
    assert_clean(base)


class SlowServer(object):
    """A real HTTP server that waits ``delay`` s before each answer, like a slow stratum-1."""

    def __init__(self, directory, delay):
        import http.server
        import threading
        stopped = self.stopped = threading.Event()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                if not stopped.wait(delay):
                    http.server.SimpleHTTPRequestHandler.do_GET(self)

            def translate_path(self, path):
                path = path.split("?", 1)[0]
                if ".." in path.split("/"):
                    return "/nonexistent"
                return os.path.join(directory, path.lstrip("/"))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_published(published):
    """``published`` behind a server that takes 1 s per answer: a mount takes seconds."""
    srv = SlowServer(published["srv"], 1.0)
    yield dict(published, url=srv.url + "/cvmfs/@fqrn@")
    srv.stop()


def start_slow_run(base, tmpdir, mode, **kw):
    """cvmfsexec R1 -- touch MARK, against the slow server; -> (Popen, MARK path), once the
    client runs (the mount is in progress)."""
    mark = os.path.join(base.top, "MARK")
    p = base.popen("cvmfsexec", [R1, "--", "sh", "-c", "touch " + mark],
                   env={"CVMFSEXEC_MODE": mode, "TMPDIR": tmpdir}, **kw)
    wait_for(lambda: base.clients() or p.poll() is not None, 30, "the client to start")
    assert p.poll() is None, p.communicate()
    return p, mark


@pytest.mark.parametrize("mode", ["3", "3b", "2"])
def test_sigterm_while_mounting_runs_nothing_and_leaves_nothing(make_base, slow_published,
                                                                 tmp_path, mode):
    # mode 3 used to forward the signal to pid 1 of the pid namespace, which had no
    # handler yet, so the kernel dropped it: the payload ran and the status was 0;
    # every mode left its /tmp/cvmfsexec-XXXX behind
    base = make_base(None, source=slow_published)
    p, mark = start_slow_run(base, str(tmp_path), mode)
    try:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGTERM, err     # a shell shows 143
    assert not os.path.exists(mark)
    assert "Traceback" not in err
    assert_clean(base)
    wait_for(lambda: os.listdir(str(tmp_path)) == [], 10, "the session directory to go")


def test_ctrl_c_on_a_terminal_while_mounting_is_quiet(make_base, slow_published, tmp_path):
    # the terminal sends SIGINT to the whole process group, pid 1 of the pid namespace
    # included: it used to print a KeyboardInterrupt traceback and exit 70
    import fcntl
    import termios
    base = make_base(None, source=slow_published)
    master, slave = os.openpty()
    try:
        p, mark = start_slow_run(base, str(tmp_path), "3", stdin=slave, start_new_session=True,
                                 preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        try:
            os.write(master, b"\x03")
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == -signal.SIGINT, err      # a shell shows 130
    assert err == "" and not os.path.exists(mark)
    assert_clean(base)
    wait_for(lambda: os.listdir(str(tmp_path)) == [], 10, "the session directory to go")


def test_mode2_failed_mount_leaves_no_directory_under_cvmfs(make_base):
    base = make_base(None)
    env = {"CVMFSEXEC_MODE": "2"}
    r = base.run("cvmfsexec", ["unknown.test.local", "--", "true"], env=env)
    assert r.returncode != 0 and "failed to mount unknown.test.local" in r.stderr
    r = base.run("cvmfsexec", [R1, "--", "ls", "/cvmfs"], env=env)
    assert (r.returncode, r.stdout) == (0, R1 + "\n"), r.stderr
    assert os.listdir(os.path.join(base.path, "dist", "cvmfs")) == []
    assert_clean(base)


def test_help_prints_usage_and_exits_0(make_base):
    base = make_base(None)
    for cmd, opt in [("cvmfsexec", "-h"), ("cvmfsexec", "--help"), ("mountrepo", "-h"),
                     ("umountrepo", "-h"), ("umountrepo", "--help")]:
        r = base.run(cmd, [opt])
        assert (r.returncode, r.stderr) == (0, ""), (cmd, opt)
        assert r.stdout.startswith("usage: %s " % cmd), (cmd, opt)
