"""make demo: publish a sample repository, serve it, build cvmfsexec, run it.

    .venv/bin/python -m builder.demo [--keep]

Steps (each printed as one line): publish a sample tree (a few hundred files,
a nested catalog, a symlink, a large chunked file) as demo.cvmfs.local with the
publisher; serve it on 127.0.0.1; build a dist holding a configuration and the
repository key; build the cvmfsexec artifact; run
``./cvmfsexec demo.cvmfs.local -- ls -l /cvmfs/demo.cvmfs.local`` and a checksum
of the large file; stop the server.  Everything lives in demo-work/.
"""
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import runtime_util  # noqa: E402

FQRN = "demo.cvmfs.local"
WORK = os.path.join(ROOT, "demo-work")
BIG_MB = 40


def say(msg):
    sys.stdout.write("demo: %s\n" % msg)
    sys.stdout.flush()


def make_tree(src, big_mb=BIG_MB):
    """A few hundred small files, a nested catalog, a symlink and a large file."""
    rnd = random.Random(20261207)
    for d in range(10):
        sub = os.path.join(src, "data", "set%02d" % d)
        os.makedirs(sub)
        for i in range(30):
            with open(os.path.join(sub, "file%03d.txt" % i), "w") as f:
                f.write("set %d file %d %s\n" % (d, i, "x" * rnd.randint(0, 2000)))
    nested = os.path.join(src, "software")
    os.makedirs(os.path.join(nested, "bin"))
    open(os.path.join(nested, ".cvmfscatalog"), "w").close()
    with open(os.path.join(nested, "bin", "hello"), "w") as f:
        f.write("#!/bin/sh\necho hello from CernVM-FS\n")
    os.chmod(os.path.join(nested, "bin", "hello"), 0o755)
    os.symlink("software/bin/hello", os.path.join(src, "hello"))
    with open(os.path.join(src, "README"), "w") as f:
        f.write("A demo repository published by cvmfsexec's builder.publish.\n")
    digest = hashlib.sha256()
    with open(os.path.join(src, "big.bin"), "wb") as f:
        for _ in range(big_mb):
            block = rnd.getrandbits(8 * 1024 * 1024).to_bytes(1024 * 1024, "little")
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def start_server(directory):
    port_file = os.path.join(WORK, "httpd.port")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "httpd.py"),
                             directory, "--port-file", port_file])
    deadline = time.time() + 20
    while not os.path.exists(port_file) or not open(port_file).read().strip():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the demo HTTP server did not start")
        time.sleep(0.02)
    return proc, int(open(port_file).read())


def main(argv):
    from builder.publish import publish
    from builder import artifact
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    os.chmod(WORK, 0o755)
    t0 = time.time()
    src = os.path.join(WORK, "src")
    big_sha = make_tree(src)
    info = publish(src, FQRN, os.path.join(WORK, "pub"))
    say("published %s revision %s (%s entries, %d MB chunked file) in %.1f s"
        % (FQRN, info.get("revision"), info.get("entries", "?"), BIG_MB, time.time() - t0))
    server, port = start_server(os.path.join(WORK, "pub", "srv"))
    try:
        url = "http://127.0.0.1:%d/cvmfs/@fqrn@" % port
        say("serving it at %s" % url.replace("@fqrn@", FQRN))
        dist = os.path.join(WORK, "dist")
        runtime_util.make_dist(dist, [(FQRN, os.path.join(WORK, "pub", "keys", FQRN + ".pub"))],
                               server_url=url)
        say("dist with CVMFS_SERVER_URL and the key in %s/etc/cvmfs" % os.path.relpath(dist))
        exe = os.path.join(WORK, "cvmfsexec")
        res = artifact.build(dist, exe)
        say("built %s (%.1f MB)" % (os.path.relpath(exe), res.get("size", 0) / 1e6))
        cmd = [exe, FQRN, "--", "ls", "-l", "/cvmfs/" + FQRN]
        say("running: ./cvmfsexec %s -- ls -l /cvmfs/%s" % (FQRN, FQRN))
        t1 = time.time()
        r = subprocess.run(cmd, cwd=WORK)
        if r.returncode != 0:
            say("FAILED (exit %d); see demo-work/.cvmfsexec/log/%s.log" % (r.returncode, FQRN))
            return 1
        say("first run (extraction, mount, listing) took %.1f s" % (time.time() - t1))
        t1 = time.time()
        out = subprocess.run([exe, FQRN, "--", "sha256sum", "/cvmfs/%s/big.bin" % FQRN],
                             cwd=WORK, stdout=subprocess.PIPE, universal_newlines=True)
        got = out.stdout.split()[0] if out.stdout else ""
        ok = out.returncode == 0 and got == big_sha
        say("sha256 of /cvmfs/%s/big.bin inside: %s (%s, %.1f s)"
            % (FQRN, got[:16] + "...", "matches the source" if ok else "MISMATCH",
               time.time() - t1))
        return 0 if ok else 1
    finally:
        server.kill()
        server.wait()
        say("server stopped; everything is in %s (make clean removes it)" % os.path.relpath(WORK))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
