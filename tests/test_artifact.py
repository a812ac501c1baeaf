"""The self-extracting artifact (issue 3), end to end with real processes.

Each test builds a real artifact with `python3 build.py -o FILE --dist DIR`
(or builder.artifact.build) from a synthetic dist of realistic shape and runs
it as a user would: ./cvmfsexec -v, under several Pythons, concurrently, as an
unprivileged user, killed, rebuilt, in read-only directories.
"""
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import ROOT, pyenv_pythons, python_oldest_and_newest, unpriv_user, UNPRIV_USER

from builder import artifact
from launcher import VERSION, extract

VERSION_LINE = "cvmfsexec %s\n" % VERSION
LOCK_FREE_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
from launcher import extract
won = extract.ensure_extracted(sys.argv[2], sys.argv[3], sys.argv[4], use_lock=False)
sys.stdout.write("won\\n" if won else "lost\\n")
"""


# --- a synthetic dist of realistic shape -------------------------------------------

def _content(rng, size, vocab):
    """Random-ish but compressible bytes (like code): tokens from a vocabulary plus noise.

    Calibrated on this machine against real x86_64 ELF files: gzip -6 keeps 39%
    (real: 35%), xz -6 33% (real: 25%), xz decompresses at ~73 MB/s (real: ~64)."""
    out, n = [], 0
    while n < size:
        if rng.random() < 0.03:
            k = rng.randint(16, 256)
            out.append(rng.getrandbits(8 * k).to_bytes(k, "little"))
        else:
            b = b"".join(rng.choices(vocab, k=64))
            out.append(b)
            k = len(b)
        n += k
    return b"".join(out)[:size]


def make_dist(root, total_bytes=2 << 20, seed=1):
    """A dist like build.py's: binaries, libraries with symlink chains, configs,
    a 0600 key, hardlinks, empty directories. total_bytes of file content."""
    rng = random.Random(seed)
    vocab = [rng.getrandbits(8 * k).to_bytes(k, "little") for k in
             (rng.randint(2, 10) for _ in range(1000))]
    d = lambda *p: os.path.join(root, *p)  # noqa: E731
    for sub in ("usr/bin", "usr/lib64/cvmfs", "usr/libexec/cvmfs/authz", "etc/cvmfs/keys/cern.ch",
                "etc/cvmfs/default.d", "var/lib/cvmfs", "var/run/cvmfs", "cvmfs", "etc/cvmfs/config.d"):
        os.makedirs(d(sub), exist_ok=True)
    big = [("usr/bin/cvmfs2", 0.30, 0o755), ("usr/lib64/libcvmfs_fuse3.so.2.11.5", 0.25, 0o755),
           ("usr/lib64/libcvmfs_fuse.so.2.11.5", 0.2, 0o755), ("usr/lib64/libfuse3.so.3.10.5", 0.1, 0o755),
           ("usr/libexec/cvmfs/authz/cvmfs_helper", 0.05, 0o755), ("usr/bin/cvmfs_config", 0.04, 0o755),
           ("usr/lib64/cvmfs/libcvmfs_crypto.so.2.11.5", 0.06, 0o644)]
    for path, frac, mode in big:
        with open(d(path), "wb") as f:
            f.write(_content(rng, int(total_bytes * frac), vocab))
        os.chmod(d(path), mode)
    for i in range(12):
        with open(d("etc/cvmfs/default.d/%02d-site.conf" % i), "w") as f:
            f.write("CVMFS_PARAM_%d=%d\n" % (i, rng.randint(0, 1 << 30)))
    with open(d("etc/cvmfs/default.conf"), "w") as f:
        f.write("CVMFS_CACHE_BASE=/var/lib/cvmfs\nCVMFS_QUOTA_LIMIT=4000\n")
    with open(d("etc/cvmfs/keys/cern.ch/cern-it1.cern.ch.pub"), "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\nMIIB%s\n-----END PUBLIC KEY-----\n" % ("A" * 60))
    with open(d("etc/cvmfs/keys/site.key"), "w") as f:
        f.write("secret\n")
    os.chmod(d("etc/cvmfs/keys/site.key"), 0o600)
    for lib in ("libcvmfs_fuse3", "libcvmfs_fuse"):     # libfoo.so -> libfoo.so.2 -> libfoo.so.2.11.5
        os.symlink(lib + ".so.2.11.5", d("usr/lib64", lib + ".so.2"))
        os.symlink(lib + ".so.2", d("usr/lib64", lib + ".so"))
    os.symlink("libfuse3.so.3.10.5", d("usr/lib64/libfuse3.so.3"))
    os.symlink("../../usr/bin/cvmfs2", d("usr/libexec/cvmfs/cvmfs2-link"))
    os.symlink("/cvmfs/config-osg.opensciencegrid.org/etc", d("etc/cvmfs/config.d/absolute"))
    os.link(d("usr/bin/cvmfs_config"), d("usr/bin/cvmfs_talk"))          # hardlinks
    os.link(d("usr/bin/cvmfs_config"), d("usr/libexec/cvmfs/cvmfs_config_hl"))
    os.makedirs(d("usr/share/doc/cvmfs"))                               # a read-only directory
    with open(d("usr/share/doc/cvmfs/README"), "w") as f:
        f.write("docs\n")
    os.chmod(d("usr/share/doc/cvmfs"), 0o555)
    return root


def tree_manifest(root):
    """{relpath: (kind, mode, symlink-target or sha256 or None)} plus hardlink groups."""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", None, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
                inodes.setdefault(st.st_ino, []).append(rel)
    groups = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out, groups


# --- helpers ------------------------------------------------------------------------

def build(dist, output, *extra):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "build.py")] + list(extra)
                       + ["-o", str(output), "--dist", str(dist)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 0, r.stderr
    return str(output)


def run(cmd, env=None, cwd=None, user=None, timeout=60, **kw):
    if user:
        cmd = [shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser",
               "-u", user, "--"] + cmd
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=env, cwd=cwd, timeout=timeout, **kw)


def extraction_count(base, what=": extracted "):
    """Lines of log/extract.log: extractions (or, with what=": discarded ", wasted unpackings)."""
    try:
        with open(os.path.join(base, "log", "extract.log")) as f:
            return len([line for line in f if what in line])
    except FileNotFoundError:
        return 0


def siblings(base):
    parent, name = os.path.split(base)
    return sorted(n for n in os.listdir(parent) if n.startswith(name + ".") and n != name + ".lock")


@pytest.fixture(scope="module")
def small_dist(tmp_path_factory):
    return make_dist(str(tmp_path_factory.mktemp("dist") / "dist"))


@pytest.fixture(scope="module")
def small_artifact(small_dist, tmp_path_factory):
    return build(small_dist, tmp_path_factory.mktemp("art") / "cvmfsexec")


@pytest.fixture
def job_dir(small_artifact, tmp_path):
    """A fresh job directory holding a copy of the artifact (as a pilot would)."""
    d = tmp_path / "job dir"          # a path with a space
    d.mkdir()
    shutil.copy2(small_artifact, str(d / "cvmfsexec"))
    return d


@pytest.fixture
def shared_tmp():
    """A directory other users can reach (pytest's tmp_path is 0700 under root)."""
    d = tempfile.mkdtemp(prefix="cvmfsexec-art-")
    os.chmod(d, 0o755)
    yield d
    extract.remove_tree(d)


# --- tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_runs_under_python_from_another_cwd_and_a_path_with_spaces(python, job_dir, small_dist, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(python, str(bindir / "python3"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PATH=str(bindir))    # only this python3: the preamble must pick it
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=env, cwd=str(elsewhere))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    base = str(job_dir / ".cvmfsexec")
    assert not os.path.exists(str(elsewhere / ".cvmfsexec"))
    # extracted dist is the dist: modes, symlink targets, hashes, hardlinks, empty dirs
    assert tree_manifest(os.path.join(base, "dist")) == tree_manifest(small_dist)
    for cmd in ("cvmfsexec", "mountrepo", "umountrepo"):
        assert os.stat(os.path.join(base, cmd)).st_mode & 0o777 == 0o755
    assert os.path.isdir(os.path.join(base, "log"))
    assert os.path.isfile(os.path.join(base, "launcher", "extract.py"))
    # each command script runs on its own, with that Python
    r = run([os.path.join(base, "cvmfsexec"), "-v"], env=env, cwd=str(elsewhere))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    for cmd in ("mountrepo", "umountrepo"):             # no repository: their usage error
        r = run([os.path.join(base, cmd)], env=env, cwd=str(elsewhere))
        assert r.returncode == 2 and r.stderr.startswith(cmd + ": error:"), r.stderr
    # warm runs: no second extraction, also with the interpreter named explicitly
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=env, cwd=str(elsewhere))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    r = run([python, str(job_dir / "cvmfsexec"), "-v"], cwd=str(elsewhere))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert extraction_count(base) == 1


def plain_env(**extra):
    """The environment of a job: a system PATH (no pyenv shims), no override."""
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("CVMFSEXEC_EXTRACT_DIR", None)
    env.update(extra)
    return env


def test_no_python3_on_path_exits_127_naming_what_it_tried(job_dir, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "ls", "cat"):
        os.symlink(shutil.which(tool, path="/usr/bin:/bin"), str(bindir / tool))
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=dict(os.environ, PATH=str(bindir)))
    assert r.returncode == 127
    for name in ("python3", "/usr/libexec/platform-python", "python3.6", "Python >= 3.6"):
        assert name in r.stderr
    assert not os.path.exists(str(job_dir / ".cvmfsexec"))


def test_a_python2_named_python3_is_never_used(job_dir, tmp_path):
    pys = pyenv_pythons()
    py2 = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(list(pys.values())[0]))),
                       "2.7.18", "bin", "python") if pys else None
    if not py2 or not os.path.exists(py2):
        pytest.skip("no Python 2.7 from pyenv to disguise as python3")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(py2, str(bindir / "python3"))          # a real Python 2 under the name python3
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=dict(os.environ, PATH=str(bindir)))
    assert r.returncode == 127 and "python3(too old)" in r.stderr, r.stderr
    r = run([py2, str(job_dir / "cvmfsexec"), "-v"])      # named explicitly: a clear refusal
    assert r.returncode == 127 and "Python 2.7" in r.stderr and "Traceback" not in r.stderr, r.stderr
    newest = pys[max(pys, key=lambda v: tuple(int(x) for x in v.split(".")))]
    os.symlink(newest, str(bindir / "python3.6"))      # a good one further down the list
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=dict(os.environ, PATH=str(bindir)))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr


@pytest.mark.userns
def test_stdin_and_exit_status_pass_through_to_the_command(job_dir):
    r = run([str(job_dir / "cvmfsexec"), "--", "sh", "-c", "cat; exit 7"], env=plain_env(),
            input="hello from stdin\n")
    assert (r.returncode, r.stdout) == (7, "hello from stdin\n"), r.stderr


def test_exit_code_and_arguments_pass_through(job_dir):
    r = run([str(job_dir / "cvmfsexec"), "--no-such-option"], env=plain_env())
    direct = run([str(job_dir / ".cvmfsexec" / "cvmfsexec"), "--no-such-option"], env=plain_env())
    assert r.returncode == direct.returncode != 0
    assert r.stderr == direct.stderr


def test_twenty_simultaneous_first_runs_extract_once(job_dir):
    procs = [subprocess.Popen([str(job_dir / "cvmfsexec"), "-v"], env=plain_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
             for _ in range(20)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [(out, rc) for out, err, rc in results] == [(VERSION_LINE, 0)] * 20, results
    base = str(job_dir / ".cvmfsexec")
    assert extraction_count(base) == 1
    assert extraction_count(base, ": discarded ") == 0      # the others waited, none unpacked
    assert siblings(base) == []


def test_killed_mid_extraction_then_rerun_works(tmp_path):
    dist = make_dist(str(tmp_path / "dist"), total_bytes=40 << 20, seed=7)
    job = tmp_path / "job"
    job.mkdir()
    art = str(job / "cvmfsexec")
    artifact.build(dist, art, preset=0)                  # fast to build, slow enough to extract
    base = str(job / ".cvmfsexec")
    p = subprocess.Popen([art, "-v"], env=plain_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not any(".tmp-" in n for n in siblings(base)):
        assert p.poll() is None and time.time() < deadline, "extraction never started"
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert not os.path.exists(base), "killed too late: extraction had finished"
    assert any(".tmp-" in n for n in siblings(base))       # the half-extracted leftover
    r = run([art, "-v"], env=plain_env())
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert siblings(base) == []
    assert tree_manifest(os.path.join(base, "dist")) == tree_manifest(dist)
    assert extraction_count(base) == 1


def test_rebuild_reextracts_and_keeps_cache_and_logs(small_dist, tmp_path):
    dist = str(tmp_path / "dist")
    shutil.copytree(small_dist, dist, symlinks=True)
    job = tmp_path / "job"
    job.mkdir()
    art = build(dist, job / "cvmfsexec")
    assert run([art, "-v"], env=plain_env()).returncode == 0
    base = str(job / ".cvmfsexec")
    with open(os.path.join(base, "dist/var/lib/cvmfs/cachedb"), "w") as f:
        f.write("my cache\n")
    with open(os.path.join(base, "log/job.log"), "w") as f:
        f.write("my log\n")
    with open(os.path.join(dist, "etc/cvmfs/default.conf"), "a") as f:
        f.write("CVMFS_NEW=1\n")
    build(dist, art)
    r = run([art, "-v"], env=plain_env())
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert "CVMFS_NEW=1" in open(os.path.join(base, "dist/etc/cvmfs/default.conf")).read()
    assert open(os.path.join(base, "dist/var/lib/cvmfs/cachedb")).read() == "my cache\n"
    assert open(os.path.join(base, "log/job.log")).read() == "my log\n"
    assert extraction_count(base) == 2
    assert siblings(base) == []


@pytest.mark.root
def test_rebuild_never_walks_into_a_repository_still_mounted_in_the_old_tree(small_dist, tmp_path):
    """Regression: re-extraction deleted the old tree with a recursive walk that crossed
    mount points, so a repository still mounted under dist/cvmfs (mountrepo) would be
    walked -- every catalog downloaded -- and its files unlinked where writable. A tmpfs
    stands in for the mounted repository: a real mount, on another device."""
    import subprocess
    dist = str(tmp_path / "dist")
    shutil.copytree(small_dist, dist, symlinks=True)
    job = tmp_path / "job"
    job.mkdir()
    art = build(dist, job / "cvmfsexec")
    assert run([art, "-v"], env=plain_env()).returncode == 0
    mnt = os.path.join(str(job), ".cvmfsexec", "dist", "cvmfs", "repo.example.org")
    os.makedirs(mnt)
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt])
    try:
        with open(os.path.join(mnt, "precious"), "w") as f:
            f.write("data\n")
        with open(os.path.join(dist, "etc/cvmfs/default.conf"), "a") as f:
            f.write("CVMFS_NEW=1\n")
        build(dist, art)
        r = run([art, "-v"], env=plain_env())
        assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
        mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
        held = [m for m in mounts if m.startswith(str(job)) and m.endswith("repo.example.org")]
        assert len(held) == 1, held                     # still mounted (in the old tree)
        assert open(os.path.join(held[0], "precious")).read() == "data\n"
    finally:
        for line in open("/proc/self/mountinfo"):
            m = line.split()[4]
            if m.startswith(str(job)):
                subprocess.call(["umount", "-l", m])


def test_same_artifact_copied_again_does_not_reextract(job_dir, small_artifact):
    art = str(job_dir / "cvmfsexec")
    assert run([art, "-v"], env=plain_env()).returncode == 0
    base = str(job_dir / ".cvmfsexec")
    inode = os.stat(base).st_ino
    os.unlink(art)
    shutil.copy(small_artifact, art)                   # a new file, a new mtime
    os.utime(art, (time.time() + 3600, time.time() + 3600))
    shutil.copy(small_artifact, str(job_dir / "cvmfsexec-copy"))
    for a in (art, str(job_dir / "cvmfsexec-copy")):
        r = run([a, "-v"], env=plain_env())
        assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert os.stat(base).st_ino == inode
    assert extraction_count(base) == 1


def test_builds_are_byte_identical(small_dist, tmp_path):
    dist = str(tmp_path / "dist")
    shutil.copytree(small_dist, dist, symlinks=True)
    a = build(dist, tmp_path / "a")
    for dirpath, dirnames, filenames in os.walk(dist):     # new mtimes must not leak in
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (1e9, 1e9), follow_symlinks=False)
    b = build(dist, tmp_path / "b")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_unprivileged_user_and_read_only_directory(small_artifact, shared_tmp):
    uid, gid = unpriv_user()
    readonly = os.path.join(shared_tmp, "readonly")      # root's, 0755: read-only for the user
    writable = os.path.join(shared_tmp, "mine")
    os.mkdir(readonly, 0o755)
    os.mkdir(writable, 0o755)
    os.chown(writable, uid, gid)
    for d in (readonly, writable):
        shutil.copy(small_artifact, os.path.join(d, "cvmfsexec"))
    r = run([os.path.join(writable, "cvmfsexec"), "-v"], env=plain_env(), user=UNPRIV_USER, cwd="/")
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert os.stat(os.path.join(writable, ".cvmfsexec", "dist")).st_uid == uid
    r = run([os.path.join(readonly, "cvmfsexec"), "-v"], env=plain_env(), user=UNPRIV_USER, cwd="/")
    assert r.returncode == 1 and "CVMFSEXEC_EXTRACT_DIR" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    override = os.path.join(writable, "elsewhere", ".cvmfsexec")
    r = run([os.path.join(readonly, "cvmfsexec"), "-v"], user=UNPRIV_USER, cwd="/",
            env=plain_env(CVMFSEXEC_EXTRACT_DIR=override))
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    assert os.path.isfile(os.path.join(override, "cvmfsexec"))


def test_lock_held_elsewhere_times_out_naming_the_variable(job_dir):
    import fcntl
    base = str(job_dir / ".cvmfsexec")
    with open(base + ".lock", "w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)               # another extraction, stuck
        start = time.time()
        r = run([str(job_dir / "cvmfsexec"), "-v"], env=plain_env(CVMFSEXEC_EXTRACT_TIMEOUT="0.5"))
        assert time.time() - start < 20
    assert r.returncode == 1 and "CVMFSEXEC_EXTRACT_TIMEOUT" in r.stderr, r.stderr
    assert not os.path.exists(base)


def test_non_numeric_extract_timeout_is_a_clear_error_not_a_traceback(job_dir):
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=plain_env(CVMFSEXEC_EXTRACT_TIMEOUT="abc"))
    assert r.returncode == 1, r.stderr
    assert "CVMFSEXEC_EXTRACT_TIMEOUT=abc is not a number" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_override_refuses_a_foreign_directory(job_dir, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    r = run([str(job_dir / "cvmfsexec"), "-v"], env=plain_env(CVMFSEXEC_EXTRACT_DIR=str(foreign)))
    assert r.returncode == 1 and "CVMFSEXEC_EXTRACT_DIR" in r.stderr, r.stderr
    assert os.listdir(str(foreign)) == ["thesis.tex"]


def test_lock_free_fallback_parallel_extractions_one_rename_wins(small_artifact, small_dist, tmp_path):
    """Where flock is unsupported, every process extracts and the renames decide.

    No filesystem here lacks flock, so the fallback function is called directly.
    """
    import zipfile
    with zipfile.ZipFile(small_artifact) as zf:
        digest = zf.read("__main__.py").decode().split('PAYLOAD_SHA256 = "')[1].split('"')[0]
    base = str(tmp_path / ".cvmfsexec")
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_FREE_WORKER, small_artifact, small_artifact,
                               base, digest], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True) for _ in range(8)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for out, err, rc in results), results
    assert sorted(out for out, err, rc in results) == ["lost\n"] * 7 + ["won\n"]
    assert extraction_count(base) == 1
    assert siblings(base) == []
    assert tree_manifest(os.path.join(base, "dist")) == tree_manifest(small_dist)


def test_stage_lays_out_the_extracted_tree(small_dist, tmp_path):
    base = str(tmp_path / "base")
    artifact.stage(small_dist, base)
    assert tree_manifest(os.path.join(base, "dist")) == tree_manifest(small_dist)
    assert os.path.isdir(os.path.join(base, "log"))
    assert os.path.isfile(os.path.join(base, "launcher", "cvmfs", "catalog.py"))
    r = run([os.path.join(base, "cvmfsexec"), "-v"], env=plain_env())
    assert (r.returncode, r.stdout) == (0, VERSION_LINE), r.stderr
    if os.path.exists(os.path.join(ROOT, "launcher", "singcvmfs.py")):
        sing = str(tmp_path / "sing")
        artifact.stage(small_dist, sing, sing=True)
        assert sorted(n for n in os.listdir(sing)) == ["dist", "launcher", "log", "singcvmfs"]


def test_singcvmfs_artifact_extracts_to_dot_singcvmfs(small_dist, tmp_path):
    if not os.path.exists(os.path.join(ROOT, "launcher", "singcvmfs.py")):
        pytest.skip("launcher/singcvmfs.py (the singcvmfs runtime) does not exist yet")
    art = build(small_dist, tmp_path / "singcvmfs", "-s")
    r = run([art, "-v"], env=plain_env())
    assert r.returncode == 0, r.stderr
    assert os.access(str(tmp_path / ".singcvmfs" / "singcvmfs"), os.X_OK)


def test_build_without_a_dist_says_how_to_make_one(tmp_path):
    r = run([sys.executable, os.path.join(ROOT, "build.py"), "-o", str(tmp_path / "cvmfsexec"),
             "--dist", str(tmp_path / "nodist")])
    assert r.returncode == 1 and "no dist directory" in r.stderr and "build.py" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(str(tmp_path)) == []
