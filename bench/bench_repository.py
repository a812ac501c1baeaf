#!/usr/bin/env python3
"""Benchmark of the builtin client's Repository layer (issue 5).

    python3 bench/bench_repository.py [--files 20000] [--big-mb 1024] [--keep DIR]

1. Publishes (build.py publish) a tree of --files small files in directories of
   100 (a nested catalog per 2,000 files) and one --big-mb MiB random file (chunked), serves it with the test HTTP
   server (tests/httpd.py) on 127.0.0.1.
2. list+stat of every entry (listdir of every directory, lookup of every path):
   cold (empty cache: catalogs are downloaded), warm (new Repository on the
   filled cache) and hot (same Repository, second pass).
3. Cold read of the big file through Repository.open().read() in 128 KiB
   blocks (what FUSE asks for) against the raw HTTP transfer of the same
   objects from the same server in the same run (the reference).
Prints a table; RSS is the process's resident size after each step.
"""
import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from launcher.cvmfs.repository import Repository  # noqa: E402

FQRN = "bench.example.org"
BLOCK = 128 * 1024


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def make_tree(src, nfiles, big_mb):
    per_dir = 100
    for i in range(nfiles):
        d = os.path.join(src, "d%03d" % (i // per_dir // 20), "s%04d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
            marker = os.path.join(os.path.dirname(d), ".cvmfscatalog")
            if not os.path.exists(marker):      # one nested catalog per top directory
                open(marker, "w").close()
        with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
            f.write("file %d\n" % i * (1 + i % 7))
    os.makedirs(os.path.join(src, "big"))
    with open(os.path.join(src, "big", "big.bin"), "wb") as f:
        for _ in range(big_mb):
            f.write(os.urandom(1 << 20))


def start_server(directory, tmp):
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "httpd.py"),
                             directory, "--port-file", port_file])
    deadline = time.time() + 20
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("HTTP server did not start")
        time.sleep(0.02)
    return proc, int(open(port_file).read())


def walk(repo):
    n = 0
    stack = [""]
    while stack:
        path = stack.pop()
        for e in repo.listdir(path):
            repo.lookup(e.path)        # the FUSE lookup of each name
            n += 1
            if e.is_dir():
                stack.append(e.path)
    return n


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def raw_http_speed(port, repo, entry):
    """MB/s of plain GETs of the file's stored chunk objects on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    total = 0
    t = time.perf_counter()
    for h, _off, _size in repo.chunk_list(entry):
        from launcher.cvmfs.hashes import ContentHash
        conn.request("GET", "/cvmfs/%s/%s" % (FQRN, ContentHash.parse(h, suffix="P").url_path()))
        resp = conn.getresponse()
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            total += len(block)
    dt = time.perf_counter() - t
    conn.close()
    return total, dt


def read_all(repo, entry):
    h = repo.open(entry)
    total = 0
    try:
        while total < entry.size:
            block = h.read(total, BLOCK)
            if not block:
                raise RuntimeError("short read at %d" % total)
            total += len(block)
    finally:
        h.close()
    return total


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = ap.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="bench-repo-")
    os.makedirs(work, exist_ok=True)
    server = None
    rows = []
    try:
        src = os.path.join(work, "src")
        if not os.path.isdir(src):
            make_tree(src, args.files, args.big_mb)
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        # in a child process, so that RSS below is the reader's alone
        _, t_pub = timed(lambda: subprocess.check_call(
            [sys.executable, os.path.join(ROOT, "build.py"), "publish", src, "--fqrn", FQRN,
             "--out", out], stdout=subprocess.DEVNULL))
        keys_dir = os.path.join(out, "keys")
        rows.append(("publish %d files + %d MiB" % (args.files, args.big_mb), "%.1f s" % t_pub,
                     ""))
        server, port = start_server(os.path.join(out, "srv"), work)

        def config(cache):
            return {"CVMFS_SERVER_URL": "http://127.0.0.1:%d/cvmfs/@fqrn@" % port,
                    "CVMFS_HTTP_PROXY": "DIRECT", "CVMFS_CACHE_BASE": cache,
                    "CVMFS_KEYS_DIR": keys_dir, "CVMFS_QUOTA_LIMIT": "-1"}
        cache = os.path.join(work, "cache")
        shutil.rmtree(cache, ignore_errors=True)
        rss0 = rss_mb()

        repo, t_open = timed(lambda: Repository(FQRN, config(cache)))
        n, t_cold = timed(lambda: walk(repo))
        rows.append(("open (cold: manifest, chain, root catalog)", "%.3f s" % t_open, ""))
        rows.append(("list+stat %d entries, cold" % n, "%.2f s" % t_cold,
                     "%.0f entries/s" % (n / t_cold)))
        n2, t_hot = timed(lambda: walk(repo))
        rows.append(("list+stat, hot (same Repository)", "%.2f s" % t_hot,
                     "%.2fx cold" % (t_hot / t_cold)))
        rows.append(("RSS after walks (start %.0f MB)" % rss0, "%.1f MB" % rss_mb(), ""))
        repo.close()

        repo, t_open_w = timed(lambda: Repository(FQRN, config(cache)))
        n3, t_warm = timed(lambda: walk(repo))
        assert n == n2 == n3
        rows.append(("list+stat, warm (new Repository, cached catalogs)",
                     "%.2f s" % (t_open_w + t_warm), "%.2fx cold" % ((t_open_w + t_warm) / t_cold)))

        big = repo.lookup("/big/big.bin")
        raw_bytes, t_raw = timed(lambda: raw_http_speed(port, repo, big))[0]
        raw_speed = raw_bytes / t_raw / 1e6
        rows.append(("raw HTTP GET of the %d chunk objects (reference)" % len(repo.chunk_list(big)),
                     "%.0f MB/s" % raw_speed, "1.00"))
        got, t_read = timed(lambda: read_all(repo, big))
        speed = got / t_read / 1e6
        rows.append(("cold read via Repository (fetch+verify+inflate+cache+pread)",
                     "%.0f MB/s" % speed, "%.2f of raw" % (speed / raw_speed)))
        got, t_read2 = timed(lambda: read_all(repo, big))
        rows.append(("warm read (cached chunks)", "%.0f MB/s" % (got / t_read2 / 1e6),
                     "%.2f of raw" % (got / t_read2 / 1e6 / raw_speed)))
        rows.append(("RSS at the end", "%.1f MB" % rss_mb(), ""))
        repo.close()
    finally:
        if server is not None:
            server.kill()
            server.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    w = max(len(r[0]) for r in rows)
    print("%-*s  %12s  %s" % (w, "measurement", "value", "ratio"))
    for name, value, ratio in rows:
        print("%-*s  %12s  %s" % (w, name, value, ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
