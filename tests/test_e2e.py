"""The shipped single-file artifact, end to end: publish, serve, build, copy, run, mount.

One module-scoped world (built once per xdist worker): builder.demo's sample tree
(small files, a nested catalog, a symlink, a 20 MiB file that the publisher cuts
into 8 MiB chunks) published with builder.publish, served on 127.0.0.1, a dist
made with runtime_util.make_dist and the artifact written by ``build.py -o``.
Each test copies the artifact into a fresh job directory and runs
``./cvmfsexec REPO -- sh -c SCRIPT`` with a PATH whose first ``python3`` is the
interpreter under test, then checks what the job saw and that nothing is left.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import (ROOT, HttpServer, grant_fuse_access, pyenv_pythons,
                      python_oldest_and_newest, unpriv_user, wait_for)
import runtime_util

from builder import demo
from builder.publish import CHUNK_SIZE, publish
from launcher import VERSION

pytestmark = [pytest.mark.userns, pytest.mark.fuse]

FQRN = "e2e.test.local"
BIG_MB = 20                     # > 2 * CHUNK_SIZE: three chunks, the last one short
NODE_PYTHON = "/usr/bin/python3"    # the unprivileged user cannot reach pyenv under /root
STDIN = b"".join(b"line %06d of piped stdin\n" % i for i in range(8000))   # > a pipe buffer

# Runs inside the job; one "key: value" line per fact so a failure names what broke.
SCRIPT = r"""
job=$PWD
cd /cvmfs/%(fqrn)s || exit 99
echo "ls: $(ls | tr '\n' ' ')"
echo "cvmfs: $(ls /cvmfs | tr '\n' ' ')"
echo "sets: $(ls data | wc -l) $(ls data/set03 | wc -l)"
echo "nested: $(ls software/bin)"
echo "link: $(readlink hello)"
echo "run: $(./hello)"
echo "big: $(sha256sum < big.bin)"
echo "stdin: $(sha256sum)"
for f in /proc/[0-9]*/cmdline; do
  line=$(tr '\0' ' ' < "$f" 2>/dev/null)
  case $line in *" -m launcher.client "*"$job/"*) echo "client: $line" ;; esac
done
exit 42
""" % {"fqrn": FQRN}


def count_objects(repo_dir, suffix):
    return sum(1 for d, _, names in os.walk(os.path.join(repo_dir, "data"))
               for n in names if n.endswith(suffix))


@pytest.fixture(scope="module")
def world():
    """Published, served, built once: {top, artifact, big_sha256}.

    Under a 0755 directory in /tmp (pytest's tmp_path is 0700 under root) so the
    unprivileged user can reach the artifact and the job directories."""
    top = tempfile.mkdtemp(prefix="cvmfsexec-e2e-")
    os.chmod(top, 0o755)
    server = None
    try:
        big_sha = demo.make_tree(os.path.join(top, "src"), big_mb=BIG_MB)
        info = publish(os.path.join(top, "src"), FQRN, os.path.join(top, "pub"))
        # chunking is exercised: the big file became chunk objects (suffix P)
        assert BIG_MB << 20 > 2 * CHUNK_SIZE
        assert count_objects(info["repo_dir"], "P") == 3
        assert info["catalogs"] == 2                    # root + software/.cvmfscatalog
        server = HttpServer(os.path.join(top, "pub", "srv"), top)
        dist = runtime_util.make_dist(
            os.path.join(top, "dist"),
            [(FQRN, os.path.join(info["keys_dir"], FQRN + ".pub"))],
            server_url=server.url + "/cvmfs/@fqrn@")
        artifact = os.path.join(top, "cvmfsexec")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "build.py"), "-o", artifact,
                            "--dist", dist], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        assert r.returncode == 0, r.stderr
        os.chmod(artifact, 0o755)
        yield {"top": top, "artifact": artifact, "big_sha256": big_sha}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


class Job(object):
    """A fresh job directory holding a copy of the artifact, run as a pilot would."""

    def __init__(self, world, name, python, user=None):
        self.dir = os.path.join(world["top"], name)
        self.tmp = os.path.join(self.dir, "tmp")           # the job's TMPDIR
        self.bin = os.path.join(world["top"], name + "-bin")
        os.makedirs(self.tmp)
        os.mkdir(self.bin)
        os.symlink(python, os.path.join(self.bin, "python3"))
        shutil.copy2(world["artifact"], os.path.join(self.dir, "cvmfsexec"))
        self.user = user
        if user:
            runtime_util.chown_tree(self.dir, *user)

    def run(self, args, env=None, **kw):
        """./cvmfsexec args from the job directory; -> CompletedProcess (bytes)."""
        e = {"PATH": self.bin + ":/usr/bin:/bin", "HOME": self.dir, "TMPDIR": self.tmp,
             "SHELL": "/bin/sh", "LC_ALL": "C"}
        e.update(env or {})
        if self.user:
            uid, gid = self.user
            kw["preexec_fn"] = lambda: (os.setgroups([]), os.setgid(gid), os.setuid(uid))
        return subprocess.run(["./cvmfsexec"] + list(args), cwd=self.dir, env=e,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, **kw)

    def processes(self):
        """pids of processes whose command line names this job directory."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.dir.encode() + b"/" in cmd:
                found.append(int(pid))
        return found

    def mounts(self):
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if self.dir + "/" in line]

    def cleanup(self):
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for line in reversed(self.mounts()):
            subprocess.run(["umount", "-l", line.split()[4]], stderr=subprocess.DEVNULL)


@pytest.fixture
def make_job(world, request):
    jobs = []

    def make(python, user=None):
        job = Job(world, request.node.name.replace("/", "_").replace("[", "-").rstrip("]"),
                  python, user)
        jobs.append(job)
        return job
    yield make
    for job in jobs:
        job.cleanup()


def run_and_check(job, world, env=None):
    """Run SCRIPT in the job; assert what it saw, the pass-through and the cleanup."""
    r = job.run([FQRN, "--", "sh", "-c", SCRIPT], env=env, input=STDIN)
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 42, "exit %d\n%s\n%s" % (r.returncode, out, err)
    facts = {}
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        facts.setdefault(key, []).append(value)
    assert facts["ls"] == ["README big.bin data hello software "], out
    assert facts["cvmfs"] == [FQRN + " "], out
    assert facts["sets"] == ["10 30"], out
    assert facts["nested"] == ["hello"], out
    assert facts["link"] == ["software/bin/hello"], out
    assert facts["run"] == ["hello from CernVM-FS"], out
    assert facts["big"] == [world["big_sha256"] + "  -"], out
    assert facts["stdin"] == [hashlib.sha256(STDIN).hexdigest() + "  -"], out
    # the preamble picked the first python3 on PATH, and the FUSE client runs on it too
    clients = facts.get("client", [])
    assert len(clients) == 1, out
    assert clients[0].startswith(os.path.join(job.bin, "python3") + " -m launcher.client "), out
    assert "Traceback" not in err, err
    wait_for(lambda: not job.processes(), what="the job's processes to exit")
    assert job.mounts() == []
    assert os.listdir(job.tmp) == []            # the session directory went too
    return r


def check_version(job):
    r = job.run(["-v"])
    assert (r.returncode, r.stdout) == (0, ("cvmfsexec %s\n" % VERSION).encode()), r.stderr


@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_artifact_mounts_and_passes_through_on_oldest_and_newest_python(make_job, world,
                                                                         python):
    job = make_job(python)
    run_and_check(job, world)
    check_version(job)
    with open(os.path.join(job.dir, ".cvmfsexec", "log", "extract.log")) as f:
        assert sum(1 for line in f if ": extracted " in line) == 1


def test_artifact_as_unprivileged_user(make_job, world):
    if not os.access(NODE_PYTHON, os.X_OK):
        pytest.skip("no %s for the unprivileged user" % NODE_PYTHON)
    user = None
    if os.geteuid() == 0:
        grant_fuse_access()
        user = unpriv_user()
    job = make_job(NODE_PYTHON, user)
    run_and_check(job, world)
    check_version(job)
    if user:
        st = os.stat(os.path.join(job.dir, ".cvmfsexec", "dist"))
        assert (st.st_uid, st.st_gid) == user


def test_artifact_in_mode_3b(make_job, world):
    pys = pyenv_pythons()
    python = pys[max(pys, key=lambda v: tuple(int(x) for x in v.split(".")))] if pys \
        else NODE_PYTHON
    job = make_job(python)
    r = run_and_check(job, world, env={"CVMFSEXEC_MODE": "3b", "CVMFSEXEC_DEBUG": "1"})
    assert b"mode 3b" in r.stderr, r.stderr
