"""Downloader: host/proxy chains and failover against real HTTP servers and a real squid."""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import ROOT, python_oldest_and_newest
from faultserver import FaultServer, dead_port
from launcher.cvmfs.download import (DIRECT, DownloadError, Downloader, parse_host_chain,
                                     parse_proxy_chain)

FQRN = "test.example.org"
BASE = "/cvmfs/" + FQRN
PUBLISHED = b"Cabc\nRsomething\n" * 1000
FILES = {BASE + "/.cvmfspublished": PUBLISHED,
         BASE + "/data/ab/cdef": b"object bytes " * 5000}


def config(hosts, proxy=DIRECT, **extra):
    cfg = {"CVMFS_SERVER_URL": ";".join(hosts), "CVMFS_HTTP_PROXY": proxy,
           "CVMFS_BACKOFF_INIT": "0.01", "CVMFS_BACKOFF_MAX": "0.05",
           "CVMFS_TIMEOUT": "5", "CVMFS_TIMEOUT_DIRECT": "5"}
    cfg.update(extra)
    return cfg


def host_url(server_or_port):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return "http://127.0.0.1:%d/cvmfs/@fqrn@" % port


@pytest.fixture
def servers():
    started = []

    def start(files=FILES):
        s = FaultServer(files)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def is_published(data):
    return data == PUBLISHED


# --- configuration grammar --------------------------------------------------------
def test_server_url_templates_and_separators():
    hosts = parse_host_chain("http://s1.cern.ch/cvmfs/@fqrn@; s2:8000/@org@/x/;;", "atlas.cern.ch")
    assert hosts == ["http://s1.cern.ch/cvmfs/atlas.cern.ch", "http://s2:8000/atlas/x"]


def test_max_servers_truncates_host_chain():
    d = Downloader(config(["http://a/cvmfs/@fqrn@", "http://b/x", "http://c/y"],
                          CVMFS_MAX_SERVERS="2"), FQRN)
    assert d.hosts == ["http://a/cvmfs/" + FQRN, "http://b/x"]


def test_proxy_grammar_groups_direct_and_fallback():
    assert parse_proxy_chain("http://p1:3128|p2:3128;DIRECT") == [
        ["http://p1:3128", "http://p2:3128"], [DIRECT]]
    assert parse_proxy_chain("") == [[DIRECT]]
    # a fallback proxy removes DIRECT from both lists (spec 4.1)
    assert parse_proxy_chain("http://p1:3128;DIRECT", "http://fb:3128") == [
        ["http://p1:3128"], ["http://fb:3128"]]


def test_proxy_auto_uses_http_proxy_or_direct_with_note():
    notes = []
    assert parse_proxy_chain("auto;DIRECT", environ={"http_proxy": "http://sq:3128"},
                             log=notes.append) == [["http://sq:3128"], [DIRECT]]
    assert parse_proxy_chain("auto", environ={}, log=notes.append) == [[DIRECT]]
    assert "PAC" in notes[-1]


PAC_CONSTANT = b"""function FindProxyForURL(url, host) {
    // generated for this client
    return "PROXY %s; SOCKS 10.0.0.1:1080; DIRECT";
}
"""
PAC_CONDITIONAL = b"""function FindProxyForURL(url, host) {
    if (shExpMatch(url, "*cvmfs*")) { return "PROXY squid.example:3128"; }
    return "DIRECT";
}
"""


def test_proxy_auto_from_constant_pac_file(servers, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    pac = servers({"/wpad.dat": PAC_CONSTANT % b"p1.example:3128",
                   "/cond.dat": PAC_CONDITIONAL})
    notes = []
    groups = parse_proxy_chain("auto", log=notes.append, environ={},
                               pac_urls="http://127.0.0.1:%d/missing.dat;%s/cond.dat;%s/wpad.dat"
                               % (dead_port(), pac.url, pac.url))
    assert groups == [["http://p1.example:3128"], [DIRECT]]
    assert any("cannot fetch PAC" in n for n in notes)
    assert any("not a constant answer" in n for n in notes)


# --- host failover -------------------------------------------------------------------
def test_first_server_down_second_serves_and_stays_current(servers):
    good = servers()
    d = Downloader(config([host_url(dead_port()), host_url(good)]), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert d.current_host == "http://127.0.0.1:%d/cvmfs/%s" % (good.port, FQRN)
    assert d.fetch("data/ab/cdef") == FILES[BASE + "/data/ab/cdef"]


def test_http_500_moves_to_next_host_and_failover_is_sticky(servers):
    bad, good = servers(), servers()
    bad.fault("500")
    d = Downloader(config([host_url(bad), host_url(good)]), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert len(bad.requests) == 1      # 500 is a host error: no same-host retry
    d.fetch("data/ab/cdef")
    d.fetch(".cvmfspublished")
    assert len(bad.requests) == 1      # later requests start at the working host
    assert len(good.requests) == 3


def test_404_is_a_host_error(servers):
    first, second = servers(), servers()
    first.fault("404", path="data/")
    d = Downloader(config([host_url(first), host_url(second)]), FQRN)
    assert d.fetch("data/ab/cdef") == FILES[BASE + "/data/ab/cdef"]
    assert d.current_host.startswith(second.url)


def test_connection_dropped_mid_body_is_retried_on_same_host(servers):
    s = servers()
    s.fault("drop", times=1)
    d = Downloader(config([host_url(s)]), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert len(s.requests) == 2


def test_host_dropping_every_transfer_fails_over(servers):
    bad, good = servers(), servers()
    bad.fault("drop")
    d = Downloader(config([host_url(bad), host_url(good)], CVMFS_MAX_RETRIES="2"), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert len(bad.requests) == 3      # 1 + CVMFS_MAX_RETRIES on the same path
    assert d.current_host.startswith(good.url)


def test_corrupted_bytes_refetched_without_cache_then_next_host(servers):
    bad, good = servers(), servers()
    bad.fault("corrupt")
    d = Downloader(config([host_url(bad), host_url(good)]), FQRN)
    assert d.fetch(".cvmfspublished", validate=is_published) == PUBLISHED
    assert len(bad.requests) == 2
    assert "Pragma" not in bad.requests[0][1]
    assert bad.requests[1][1].get("Pragma") == "no-cache"     # spec 5.3 step 2
    assert bad.requests[1][1].get("Cache-Control") == "no-cache"


def test_stalled_transfer_times_out_and_fails_over(servers):
    bad, good = servers(), servers()
    bad.fault("stall")
    d = Downloader(config([host_url(bad), host_url(good)], CVMFS_TIMEOUT_DIRECT="1",
                          CVMFS_MAX_RETRIES="0"), FQRN)
    start = time.time()
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert time.time() - start < 4


def test_host_order_returns_to_first_host_after_reset_time(servers):
    first, second = servers(), servers()
    first.fault("500", times=1)
    now = [1000.0]
    d = Downloader(config([host_url(first), host_url(second)], CVMFS_HOST_RESET_AFTER="1800"),
                   FQRN, clock=lambda: now[0])
    d.fetch(".cvmfspublished")
    d.fetch(".cvmfspublished")
    assert (len(first.requests), len(second.requests)) == (1, 2)
    now[0] += 1801
    d.fetch(".cvmfspublished")
    assert (len(first.requests), len(second.requests)) == (2, 2)


def test_redirect_is_a_host_error_unless_followed(servers):
    redirecting, target, other = servers(), servers(), servers()
    redirecting.fault("redirect")
    redirecting.redirect_to = target.url
    d = Downloader(config([host_url(redirecting), host_url(other)]), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert d.current_host.startswith(other.url) and not target.requests
    d = Downloader(config([host_url(redirecting)], CVMFS_FOLLOW_REDIRECTS="yes"), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert target.requests[-1][0] == BASE + "/.cvmfspublished"


def test_too_slow_transfer_fails_over(servers):
    # bytes keep coming, so no socket timeout fires: CVMFS_LOW_SPEED_LIMIT must
    bad, good = servers(), servers()
    bad.fault("trickle")
    d = Downloader(config([host_url(bad), host_url(good)], CVMFS_TIMEOUT_DIRECT="1",
                          CVMFS_LOW_SPEED_LIMIT="1024", CVMFS_MAX_RETRIES="0"), FQRN)
    start = time.time()
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert time.time() - start < 5
    assert d.current_host.startswith(good.url)


def test_all_hosts_down_names_every_host(servers):
    bad = servers()
    bad.fault("500")
    dead = dead_port()
    d = Downloader(config([host_url(dead), host_url(bad)]), FQRN)
    with pytest.raises(DownloadError) as exc:
        d.fetch("data/ab/cdef")
    msg = str(exc.value)
    assert "data/ab/cdef" in msg
    assert "127.0.0.1:%d" % dead in msg and "refused" in msg.lower()
    assert "127.0.0.1:%d" % bad.port in msg and "HTTP 500" in msg
    assert exc.value.errno == 5    # EIO for a reader


def test_missing_server_url_is_a_user_error():
    from launcher.errors import CvmfsexecError
    with pytest.raises(CvmfsexecError, match="CVMFS_SERVER_URL|no server"):
        Downloader({"CVMFS_HTTP_PROXY": "DIRECT"}, FQRN)


# --- connections and threads -----------------------------------------------------------
def test_keep_alive_reuses_one_connection_per_thread(servers):
    s = servers()
    d = Downloader(config([host_url(s)]), FQRN)
    for _ in range(5):
        d.fetch(".cvmfspublished")
    ports = set(p for _path, _h, p in s.requests)
    assert len(ports) == 1
    assert s.requests[0][1].get("Connection") == "Keep-Alive"


def test_simultaneous_failures_switch_host_once(servers):
    # each request switches only if the host it failed on is still current, so
    # threads failing together do not ping-pong the host chain (spec 5.3)
    bad, good = servers(), servers()
    bad.fault("500")
    d = Downloader(config([host_url(bad), host_url(good)]), FQRN)
    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait(10)
        results.append(d.fetch(".cvmfspublished"))
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [PUBLISHED] * 8
    assert d.stats["host_switches"] == 1
    assert d.current_host.startswith(good.url)


def test_server_closing_idle_keep_alive_connection_is_not_a_failure(servers):
    s = servers()
    d = Downloader(config([host_url(s)], CVMFS_MAX_RETRIES="0"), FQRN)
    d.fetch(".cvmfspublished")
    s.drop_connections()
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert d.stats["failures"] == 0


def test_parallel_downloads_with_a_failing_host(servers):
    files = dict((BASE + "/data/%02x/obj" % i, os.urandom(20000 + i)) for i in range(64))
    bad, good = servers(files), servers(files)
    bad.fault("500", path="data/1")
    d = Downloader(config([host_url(bad), host_url(good)]), FQRN)
    results = {}
    errors = []

    def worker(keys):
        try:
            for k in keys:
                results[k] = d.fetch(k[len(BASE) + 1:],
                                     validate=lambda b, k=k: b == files[k])
        except Exception as e:  # reported below
            errors.append(e)
    keys = sorted(files)
    threads = [threading.Thread(target=worker, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == files


@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_downloader_runs_on_oldest_and_newest_python(servers, python):
    bad, good = servers(), servers()
    bad.fault("corrupt")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from launcher.cvmfs.download import Downloader\n"
            "d = Downloader({'CVMFS_SERVER_URL': %r, 'CVMFS_BACKOFF_INIT': '0'}, %r)\n"
            "data = d.fetch('.cvmfspublished', validate=lambda b: b.startswith(b'Cabc'))\n"
            "sys.stdout.write('%%d %%s' %% (len(data), d.current_host))\n"
            % (ROOT, host_url(bad) + ";" + host_url(good), FQRN))
    out = subprocess.check_output([python, "-c", code], universal_newlines=True, timeout=60)
    assert out == "%d %s" % (len(PUBLISHED), good.url + "/cvmfs/" + FQRN)


# --- through a real squid -------------------------------------------------------------------
class Squid(object):
    def __init__(self, workdir):
        self.dir = workdir
        self.port = dead_port()
        self.access_log = os.path.join(workdir, "access.log")
        conf = os.path.join(workdir, "squid.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "http_port 127.0.0.1:%d" % self.port,
                "pid_filename %s/squid.pid" % workdir,
                "access_log stdio:%s" % self.access_log,
                "cache_log %s/cache.log" % workdir,
                "cache_store_log none",
                "coredump_dir %s" % workdir,
                "cache_mem 8 MB",
                "pinger_enable off",
                "shutdown_lifetime 0 seconds",
                "http_access allow localhost",
                "http_access deny all",
                "visible_hostname cvmfsexec-test", ""]))
        if os.geteuid() == 0:      # squid drops root privileges to the proxy user
            uid = pwd.getpwnam("proxy").pw_uid
            os.chown(workdir, uid, -1)
        with open(os.path.join(workdir, "stderr"), "wb") as err:
            self.proc = subprocess.Popen(["squid", "-N", "-f", conf],
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log = ""
                    for name in ("stderr", "cache.log"):
                        if os.path.exists(os.path.join(workdir, name)):
                            log += open(os.path.join(workdir, name)).read()[-2000:]
                    self.stop()
                    raise RuntimeError("squid did not start:\n" + log)
                time.sleep(0.1)
        self.url = "http://127.0.0.1:%d" % self.port

    def log_lines(self, needle, deadline=10):
        """access.log lines containing needle, polled (squid logs at request end)."""
        end = time.time() + deadline
        while True:
            lines = [line for line in open(self.access_log).read().splitlines()
                     if needle in line] if os.path.exists(self.access_log) else []
            if lines or time.time() > end:
                return lines
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def squid():
    if not shutil.which("squid"):
        pytest.skip("squid is not installed (Debian package squid)")
    # not under pytest's tmp dir: its 0700 parents keep out the proxy user squid runs as
    workdir = tempfile.mkdtemp(prefix="cvmfsexec-squid-")
    os.chmod(workdir, 0o755)
    try:
        s = Squid(workdir)
        yield s
        s.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_proxy_chain_dead_proxy_then_squid(servers, squid):
    s = servers()
    dead = "http://127.0.0.1:%d" % dead_port()
    d = Downloader(config([host_url(s)], proxy="%s;%s" % (dead, squid.url)), FQRN)
    assert d.fetch(".cvmfspublished", validate=is_published) == PUBLISHED
    assert d.current_proxy == squid.url
    # the request really went through squid: it is in squid's log, and the server
    # saw squid's Via header
    url = "http://127.0.0.1:%d%s/.cvmfspublished" % (s.port, BASE)
    assert squid.log_lines(url)
    assert "squid" in s.requests[-1][1].get("Via", "")
    d.fetch("data/ab/cdef")
    assert squid.log_lines("%s/data/ab/cdef" % BASE)


def test_proxy_order_returns_to_first_group_after_reset_time(servers, squid):
    s = servers()
    dead = "http://127.0.0.1:%d" % dead_port()
    now = [1000.0]
    d = Downloader(config([host_url(s)], proxy="%s;%s" % (dead, squid.url),
                          CVMFS_MAX_RETRIES="0", CVMFS_PROXY_RESET_AFTER="300"),
                   FQRN, clock=lambda: now[0])
    d.fetch(".cvmfspublished")
    d.fetch(".cvmfspublished")
    assert d.stats["proxy_switches"] == 1         # sticky on squid
    now[0] += 301
    d.fetch(".cvmfspublished")                    # back to the dead first group, then over
    assert d.stats["proxy_switches"] == 2
    assert d.current_proxy == squid.url


def test_load_balanced_group_skips_dead_proxy(servers, squid):
    s = servers()
    dead = "http://127.0.0.1:%d" % dead_port()
    for _ in range(3):     # the start proxy of the group is random: both orders occur
        d = Downloader(config([host_url(s)], proxy="%s|%s" % (dead, squid.url),
                              CVMFS_MAX_RETRIES="0"), FQRN)
        assert d.fetch(".cvmfspublished") == PUBLISHED
        assert d.current_proxy == squid.url
        assert d.proxy_list == [dead, squid.url]


def test_proxy_auto_pac_file_routes_through_squid(servers, squid, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    s = servers(dict(FILES, **{"/wpad.dat": PAC_CONSTANT % squid.url[7:].encode()}))
    d = Downloader(config([host_url(s)], proxy="auto", CVMFS_PAC_URLS=s.url + "/wpad.dat"),
                   FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert d.current_proxy == squid.url
    assert squid.log_lines("127.0.0.1:%d%s/.cvmfspublished" % (s.port, BASE))


def test_dead_host_behind_squid_fails_over_to_next_host(servers, squid):
    # squid answers 503 + X-Squid-Error for the dead host: a proxy error that, with
    # every proxy tried, becomes host failover (spec 5.3 step 4)
    s = servers()
    dead = dead_port()
    d = Downloader(config([host_url(dead), host_url(s)], proxy=squid.url,
                          CVMFS_MAX_RETRIES="0"), FQRN)
    assert d.fetch(".cvmfspublished") == PUBLISHED
    assert d.current_host.startswith(s.url)
    assert squid.log_lines("127.0.0.1:%d/" % dead)


def test_corrupted_bytes_through_squid_move_to_next_host(servers, squid):
    bad, good = servers(), servers()
    bad.fault("corrupt")
    d = Downloader(config([host_url(bad), host_url(good)], proxy=squid.url), FQRN)
    assert d.fetch(".cvmfspublished", validate=is_published) == PUBLISHED
    assert d.current_host.startswith(good.url)
    assert d.current_proxy == squid.url      # the proxy was not blamed
