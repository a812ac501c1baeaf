"""Downloads from the stratum servers: host and proxy chains, retries, failover.

This is the builtin client's download manager (spec: cvmfs-client-configuration
sections 3.2, 4 and 5).  One :class:`Downloader` serves one repository and is
shared by every thread of the client:

* the host chain is ``CVMFS_SERVER_URL`` split on ``;`` (``@fqrn@``/``@org@``
  expanded); the proxy chain is ``CVMFS_HTTP_PROXY`` -- ``;`` separates failover
  groups tried in order, ``|`` separates the proxies of a load-balance group (one
  picked at random), ``DIRECT`` (or an empty element) means no proxy;
* a transfer error (connect refused, timeout, too slow, short body) is retried on
  the same path up to ``CVMFS_MAX_RETRIES`` times after a random backoff that
  starts within ``CVMFS_BACKOFF_INIT`` and doubles up to ``CVMFS_BACKOFF_MAX``;
* a body the caller's ``validate`` rejects is fetched once more with ``no-cache``
  headers (so a proxy refetches it), then counts as a host error;
* a host error (404, 5xx, dead host) moves to the next host, a proxy error moves
  to the next proxy; the switch is global and sticky -- later requests start from
  the host/proxy that worked -- and only happens if no other thread has switched
  already (the algorithm of cvmfs's ``DownloadManager``).  After
  ``CVMFS_HOST_RESET_AFTER`` / ``CVMFS_PROXY_RESET_AFTER`` seconds on a backup the
  first host / proxy group is tried again.

Connections are HTTP/1.1 keep-alive ``http.client`` connections, one per thread
per endpoint (a connection is not thread-safe; a per-thread pool needs no lock).
Through a proxy the request line carries the absolute URL, as a forward proxy
expects; an https host is reached through the proxy with CONNECT.

Limitation: ``auto`` (WPAD/PAC proxy discovery) needs a JavaScript engine.  We
use the ``http_proxy`` environment variable when set (step 1 of cvmfs's
discovery), then PAC files from ``CVMFS_PAC_URLS`` whose answer is a constant
string, and fall back to DIRECT otherwise, with a logged note (cvmfs would drop
the group, and fail the mount if nothing is left).
"""

import errno
import http.client
import os
import random
import re
import socket
import threading
import time

from urllib.parse import quote, unquote, urlsplit

from launcher import VERSION
from launcher.errors import CvmfsexecError

DIRECT = "DIRECT"
USER_AGENT = "cvmfs Fuse cvmfsexec-%s" % VERSION
# spec 5.1: characters outside [A-Za-z0-9/:.@+-_~[],] are percent-encoded
_SAFE_URL_CHARS = "/:.@+-_~[],"
_READ_BLOCK = 1024 * 1024

# failure classes (spec 5.2)
HOST = "host"
PROXY = "proxy"
BAD_DATA = "bad data"


class DownloadError(CvmfsexecError):
    """Every host and proxy failed for one path; an I/O error (EIO) for readers."""

    def __init__(self, message, hint=None, path=None, failures=None):
        CvmfsexecError.__init__(self, message, hint)
        self.errno = errno.EIO
        self.strerror = message
        self.path = path
        self.failures = failures or []


class _Failure(Exception):
    """One failed attempt: who is to blame and whether a same-path retry may help."""

    def __init__(self, blame, text, transfer=False):
        Exception.__init__(self, text)
        self.blame = blame          # HOST, PROXY or BAD_DATA
        self.text = text
        self.transfer = transfer    # connection / too slow / short transfer


def expand_templates(value, fqrn):
    """Replace ``@fqrn@`` and ``@org@`` (spec 2.5); unknown ``@x@`` stays as is."""
    org = fqrn.split(".", 1)[0]
    return value.replace("@fqrn@", fqrn).replace("@org@", org)


def parse_host_chain(value, fqrn):
    """``CVMFS_SERVER_URL`` -> list of base URLs without a trailing slash."""
    hosts = []
    for item in expand_templates(value or "", fqrn).split(";"):
        item = item.strip().rstrip("/")
        if not item:
            continue
        if "://" not in item:
            item = "http://" + item
        hosts.append(item)
    return hosts


def _normalise_proxy(item):
    item = item.strip()
    if item == "" or item.upper() == DIRECT:
        return DIRECT
    if "://" not in item:
        item = "http://" + item
    return item.rstrip("/")


def parse_proxy_chain(value, fallback="", environ=None, log=None, pac_urls="",
                      timeout=5):
    """``CVMFS_HTTP_PROXY`` (+ ``CVMFS_FALLBACK_PROXY``) -> list of groups of proxies.

    Each proxy is ``DIRECT`` or a ``scheme://host:port`` URL.  Fallback groups
    are appended; when there are any, DIRECT is removed everywhere (spec 4.1).
    An ``auto`` group is replaced by :func:`discover_proxies`' answer.
    """
    env = os.environ if environ is None else environ
    groups = []
    for group_text in (value or "").split(";"):
        if group_text.strip().lower() == "auto":
            discovered = discover_proxies(env, pac_urls, log, timeout)
            groups.extend(parse_proxy_chain(discovered or DIRECT, environ=env))
            continue
        groups.append([_normalise_proxy(p) for p in group_text.split("|")])
    fallback_groups = []
    for group_text in (fallback or "").split(";"):
        group = [_normalise_proxy(p) for p in group_text.split("|") if p.strip()]
        group = [p for p in group if p != DIRECT]
        if group:
            fallback_groups.append(group)
    if fallback_groups:
        groups = [[p for p in g if p != DIRECT] for g in groups]
        groups = [g for g in groups if g] + fallback_groups
    return groups or [[DIRECT]]


def discover_proxies(environ, pac_urls, log=None, timeout=5):
    """cvmfs's ``auto`` (spec 4.2): a proxy list string, or '' when nothing was found.

    1. the ``http_proxy`` environment variable; 2. each PAC file of
    ``CVMFS_PAC_URLS`` (``auto`` = http://wpad/wpad.dat), fetched directly.  Without
    a JavaScript engine we accept only PAC files whose ``FindProxyForURL`` always
    returns the same string literal (what WPAD services generate per client);
    anything else is skipped with a note.  Nothing found -> the caller uses DIRECT.
    """
    def note(message):
        if log:
            log("proxy 'auto': %s" % message)
    if environ.get("http_proxy"):
        note("using http_proxy=%s" % environ["http_proxy"])
        return environ["http_proxy"]
    for url in (pac_urls or "").split(";"):
        url = url.strip()
        if not url:
            continue
        if url == "auto":
            url = "http://wpad/wpad.dat"
        try:
            text = _get_direct(url, timeout).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException, ValueError) as e:
            note("cannot fetch PAC file %s: %s" % (url, e))
            continue
        answers = set((dq or sq).strip() for dq, sq in _PAC_RETURN_RE.findall(text))
        if "FindProxyForURL" not in text or len(answers) != 1:
            note("PAC file %s is not a constant answer, which is all the builtin client "
                 "evaluates; skipped" % url)
            continue
        proxies = pac_answer_to_proxies(answers.pop())
        note("PAC file %s: %s" % (url, proxies))
        return proxies
    note("no http_proxy in the environment and no usable PAC file "
         "(CVMFS_PAC_URLS); using DIRECT")
    return ""


_PAC_RETURN_RE = re.compile(r"""\breturn\s*\(?\s*(?:"([^"]*)"|'([^']*)')""")


def pac_answer_to_proxies(answer):
    """'PROXY h:p; SOCKS s:1; DIRECT' -> 'http://h:p;DIRECT' (spec 4.2 step 3)."""
    out = []
    for item in answer.split(";"):
        words = item.split()
        if not words:
            continue
        if words[0].upper() == DIRECT:
            out.append(DIRECT)
        elif words[0].upper() == "PROXY" and len(words) > 1:
            out.append(words[1])
    return ";".join(out) or DIRECT


def _get_direct(url, timeout):
    scheme, hostname, port, path = _split_url(url)
    conn = _new_connection(scheme, hostname, port, timeout)
    try:
        conn.request("GET", path or "/", headers={"User-Agent": USER_AGENT})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise ValueError("HTTP %d" % resp.status)
        return body
    finally:
        conn.close()


def _number(config, name, default):
    text = (config.get(name) or "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise CvmfsexecError("%s=%r is not a number" % (name, text),
                             "fix the cvmfs configuration")


def _split_url(url):
    """'http://h:p/base' -> (scheme, host, port, base_path)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower() or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/")


def _describe_oserror(e):
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return "cannot resolve host name (%s)" % (e.strerror or e)
    return e.strerror or str(e) or e.__class__.__name__


class Downloader(object):
    """Fetch repository files over HTTP with cvmfs's failover rules. Thread-safe.

    ``config`` is a dict of ``CVMFS_*`` strings; ``log`` an optional callable
    taking one message string (or a ``logging.Logger``).
    """

    def __init__(self, config, fqrn, log=None, clock=time.time):
        self.fqrn = fqrn
        if log is not None and hasattr(log, "info"):
            log = log.info
        self._log = log
        self._clock = clock
        self.hosts = parse_host_chain(config.get("CVMFS_SERVER_URL", ""), fqrn)
        max_servers = int(_number(config, "CVMFS_MAX_SERVERS", 0))
        if max_servers > 0:
            self.hosts = self.hosts[:max_servers]
        if not self.hosts:
            raise CvmfsexecError("no server configured for %s" % fqrn,
                                 "set CVMFS_SERVER_URL in the repository configuration")
        self.proxy_groups = parse_proxy_chain(
            expand_templates(config.get("CVMFS_HTTP_PROXY") or DIRECT, fqrn),
            expand_templates(config.get("CVMFS_FALLBACK_PROXY", ""), fqrn),
            log=self._note, pac_urls=config.get("CVMFS_PAC_URLS", ""),
            timeout=_number(config, "CVMFS_TIMEOUT_DIRECT", 10))
        self.timeout_proxy = _number(config, "CVMFS_TIMEOUT", 5)
        self.timeout_direct = _number(config, "CVMFS_TIMEOUT_DIRECT", 10)
        self.low_speed_limit = _number(config, "CVMFS_LOW_SPEED_LIMIT", 1024)
        self.max_retries = int(_number(config, "CVMFS_MAX_RETRIES", 1))
        self.backoff_init = _number(config, "CVMFS_BACKOFF_INIT", 2)
        self.backoff_max = _number(config, "CVMFS_BACKOFF_MAX", 10)
        self.host_reset_after = _number(config, "CVMFS_HOST_RESET_AFTER", 1800)
        self.proxy_reset_after = _number(config, "CVMFS_PROXY_RESET_AFTER", 300)
        self.follow_redirects = (config.get("CVMFS_FOLLOW_REDIRECTS", "") or "").lower() in (
            "yes", "on", "1", "true")
        self._lock = threading.Lock()
        self._local = threading.local()
        self._all_conns = []          # for close(); guarded by _lock
        self._host_index = 0
        self._host_switched_at = None
        self._group_index = 0
        self._burned = set()
        self._proxy = random.choice(self.proxy_groups[0])
        self._proxy_switched_at = None
        self.stats = {"requests": 0, "bytes": 0, "failures": 0, "host_switches": 0,
                      "proxy_switches": 0}

    # -- public state (magic xattrs) -----------------------------------------
    @property
    def current_host(self):
        with self._lock:
            return self.hosts[self._host_index]

    @property
    def current_proxy(self):
        with self._lock:
            return self._proxy

    @property
    def proxy_list(self):
        return [p for g in self.proxy_groups for p in g]

    def _note(self, message):
        if self._log:
            self._log("%s: %s" % (self.fqrn, message))

    # -- fetching ---------------------------------------------------------------
    def fetch(self, path, validate=None):
        """Body of ``<host URL>/<path>`` as bytes, after failover as needed.

        ``validate(data) -> bool`` checks the body (e.g. its content hash); a
        False result is corrupted data from that host or proxy.  Raises
        :class:`DownloadError` naming the path and each host's last failure.
        """
        path = path.lstrip("/")
        self._maybe_reset()
        n_proxies = sum(len(g) for g in self.proxy_groups)
        hosts_tried = 1
        proxies_tried = 1
        retries = 0
        backoff = 0.0
        no_cache = False
        failures = []    # (host, proxy, text)
        while True:
            with self._lock:
                host_index, proxy = self._host_index, self._proxy
            host = self.hosts[host_index]
            try:
                data = self._attempt(host, proxy, path, no_cache)
                if validate is not None and not validate(data):
                    raise _Failure(BAD_DATA, "corrupted data (failed verification)")
                with self._lock:
                    self.stats["requests"] += 1
                    self.stats["bytes"] += len(data)
                return data
            except _Failure as f:
                failure = f
            with self._lock:
                self.stats["failures"] += 1
            failures.append((host, proxy, failure.text))
            self._note("%s%s: %s" % (host + "/" + path,
                                      "" if proxy == DIRECT else " via " + proxy, failure.text))
            # 1. same-path retry for transfer errors, after a backoff
            if failure.transfer and not no_cache and retries < self.max_retries:
                retries += 1
                backoff = self._next_backoff(backoff)
                time.sleep(backoff)
                continue
            blame = failure.blame
            # 2. corrupted data: once more without proxy caches, then the host's fault
            if blame == BAD_DATA:
                if not no_cache:
                    no_cache = True
                    continue
                blame = HOST
            retries = 0
            backoff = 0.0
            # 4. proxy errors: next proxy; all proxies failed -> host failover
            if blame == PROXY:
                if proxies_tried < n_proxies:
                    proxies_tried += 1
                    self._switch_proxy(proxy)
                    continue
                self._note("all proxies failed, trying host fail-over")
                self._reset_proxies()
                proxies_tried = 1
            # 3. host errors: next host in ring order
            if hosts_tried < len(self.hosts):
                hosts_tried += 1
                self._switch_host(host_index)
                continue
            raise self._give_up(path, failures)

    def _give_up(self, path, failures):
        last = []
        seen = set()
        for host, proxy, text in reversed(failures):
            if host in seen:
                continue
            seen.add(host)
            via = "" if proxy == DIRECT else " (via %s)" % proxy
            last.append("%s%s: %s" % (host, via, text))
        last.reverse()
        message = "cannot download %s of %s: %s" % (path, self.fqrn, "; ".join(last))
        return DownloadError(message, "check CVMFS_SERVER_URL, CVMFS_HTTP_PROXY and the network",
                             path=path, failures=failures)

    def _next_backoff(self, previous):
        if previous <= 0:
            return random.uniform(0, self.backoff_init)
        return min(previous * 2, self.backoff_max)

    # -- global failover state ----------------------------------------------------
    def _switch_host(self, seen_index):
        with self._lock:
            if self._host_index != seen_index:
                return      # another request failed over already
            self._host_index = (seen_index + 1) % len(self.hosts)
            self._host_switched_at = self._clock()
            self.stats["host_switches"] += 1
            new = self.hosts[self._host_index]
        self._note("switching host to %s" % new)

    def _switch_proxy(self, seen_proxy):
        with self._lock:
            if self._proxy != seen_proxy:
                return
            self._burned.add(seen_proxy)
            group = self.proxy_groups[self._group_index]
            left = [p for p in group if p not in self._burned]
            if not left:
                self._group_index = (self._group_index + 1) % len(self.proxy_groups)
                self._burned = set()
                left = self.proxy_groups[self._group_index]
            self._proxy = random.choice(left)
            self._proxy_switched_at = self._clock()
            self.stats["proxy_switches"] += 1
            new = self._proxy
        self._note("switching proxy to %s" % new)

    def _reset_proxies(self):
        with self._lock:
            self._group_index = 0
            self._burned = set()
            self._proxy = random.choice(self.proxy_groups[0])
            self._proxy_switched_at = None

    def _maybe_reset(self):
        now = self._clock()
        with self._lock:
            if (self._host_index != 0 and self.host_reset_after > 0 and
                    self._host_switched_at is not None and
                    now - self._host_switched_at >= self.host_reset_after):
                self._host_index = 0
                self._host_switched_at = None
            if (self._proxy_switched_at is not None and self.proxy_reset_after > 0 and
                    now - self._proxy_switched_at >= self.proxy_reset_after):
                self._group_index = 0
                self._burned = set()
                self._proxy = random.choice(self.proxy_groups[0])
                self._proxy_switched_at = None

    # -- one HTTP exchange ----------------------------------------------------------
    def _attempt(self, host, proxy, path, no_cache, redirects=0):
        scheme, hostname, port, base = _split_url(host)
        url_path = base + "/" + quote(path, safe=_SAFE_URL_CHARS)
        headers = {"Accept": "*/*", "Connection": "Keep-Alive", "User-Agent": USER_AGENT}
        if no_cache:
            headers["Pragma"] = "no-cache"
            headers["Cache-Control"] = "no-cache"
        via_proxy = proxy != DIRECT
        timeout = self.timeout_proxy if via_proxy else self.timeout_direct
        conn_blame = PROXY if via_proxy else HOST
        if via_proxy and scheme == "http":
            target = "%s://%s%s" % (scheme, _netloc(hostname, port, scheme), url_path)
            headers["Proxy-Connection"] = "Keep-Alive"
        else:
            target = url_path
        for fresh in (False, True):
            conn, reused = self._connection(scheme, hostname, port, proxy, timeout, fresh)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as e:
                self._drop(conn, scheme, hostname, port, proxy)
                if reused and not fresh:
                    continue    # the server closed an idle keep-alive connection
                raise _Failure(conn_blame, "connection failed: %s" % _describe_oserror(e), True)
            except (OSError, http.client.HTTPException) as e:
                self._drop(conn, scheme, hostname, port, proxy)
                raise _Failure(conn_blame, "connection failed: %s" % (
                    _describe_oserror(e) if isinstance(e, OSError) else
                    e.__class__.__name__), True)
            break
        try:
            status = resp.status
            if 200 <= status < 300:
                return self._read_body(resp, timeout, conn_blame)
            resp.read()     # drain so the connection can be reused
        except _Failure:
            self._drop(conn, scheme, hostname, port, proxy)
            raise
        except (OSError, http.client.HTTPException) as e:
            self._drop(conn, scheme, hostname, port, proxy)
            raise _Failure(conn_blame, "short transfer: %s" % (
                _describe_oserror(e) if isinstance(e, OSError) else e.__class__.__name__), True)
        if resp.will_close:
            self._drop(conn, scheme, hostname, port, proxy)
        text = "HTTP %d %s" % (status, resp.reason)
        if status in (301, 302, 303, 307, 308) and self.follow_redirects and redirects < 4:
            location = resp.getheader("Location", "")
            if location.startswith("http://") or location.startswith("https://"):
                parts = urlsplit(location)
                return self._attempt("%s://%s" % (parts.scheme, parts.netloc), proxy,
                                     unquote(parts.path), no_cache, redirects + 1)
        squid_error = resp.getheader("X-Squid-Error") or (
            "error=" in (resp.getheader("Proxy-Status") or ""))
        if status == 429:
            raise _Failure(HOST, text, True)
        if 300 <= status < 400:
            blame = HOST        # a redirect we do not follow (spec 5.2)
        elif status in (400, 404) or status >= 500:
            blame = PROXY if (via_proxy and squid_error) else HOST
        else:
            blame = PROXY if via_proxy else HOST
        raise _Failure(blame, text)

    def _read_body(self, resp, timeout, blame):
        """Read the whole body, enforcing CVMFS_LOW_SPEED_LIMIT over timeout windows."""
        length = resp.getheader("Content-Length")
        body = bytearray()     # += on a bytearray: one copy per block (measured 1.5x
        window_start = time.time()   # faster than joining a list of blocks)
        window_bytes = 0
        while True:
            try:
                # read1: return what has arrived, so a trickle is measured (read()
                # would block until the whole block or the end of the body)
                block = resp.read1(_READ_BLOCK)
            except http.client.IncompleteRead as e:
                raise _Failure(blame, "short transfer: got %d of %s bytes" % (
                    len(body) + len(e.partial), length), True)
            if not block:
                break
            body += block
            window_bytes += len(block)
            now = time.time()
            if now - window_start >= timeout:
                if self.low_speed_limit > 0 and \
                        window_bytes < self.low_speed_limit * (now - window_start):
                    raise _Failure(blame, "too slow: %d bytes in %.1f s" % (
                        window_bytes, now - window_start), True)
                window_start, window_bytes = now, 0
        if length is not None and length.isdigit() and len(body) != int(length):
            raise _Failure(blame, "short transfer: got %d of %s bytes" % (len(body), length),
                           True)
        resp.read()     # marks the response complete, so the connection is reusable
        return bytes(body)

    # -- per-thread keep-alive connections -----------------------------------------
    def _connection(self, scheme, hostname, port, proxy, timeout, fresh):
        pool = getattr(self._local, "conns", None)
        if pool is None:
            pool = self._local.conns = {}
        key = (scheme, hostname, port, proxy)
        conn = pool.get(key)
        if conn is not None and not fresh:
            return conn, conn.sock is not None
        if conn is not None:
            conn.close()
        if proxy == DIRECT:
            conn = _new_connection(scheme, hostname, port, timeout)
        else:
            _pscheme, phost, pport, _ = _split_url(proxy)
            if scheme == "https":
                conn = http.client.HTTPSConnection(phost, pport, timeout=timeout)
                conn.set_tunnel(hostname, port)
            else:
                conn = http.client.HTTPConnection(phost, pport, timeout=timeout)
        pool[key] = conn
        with self._lock:
            self._all_conns.append(conn)
        return conn, False

    def _drop(self, conn, scheme, hostname, port, proxy):
        conn.close()
        pool = getattr(self._local, "conns", {})
        if pool.get((scheme, hostname, port, proxy)) is conn:
            del pool[(scheme, hostname, port, proxy)]
        with self._lock:
            if conn in self._all_conns:
                self._all_conns.remove(conn)

    def close(self):
        """Close every keep-alive connection of every thread."""
        with self._lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()


def _netloc(hostname, port, scheme):
    default = 443 if scheme == "https" else 80
    if ":" in hostname:
        hostname = "[%s]" % hostname
    return hostname if port == default else "%s:%d" % (hostname, port)


def _new_connection(scheme, hostname, port, timeout):
    if scheme == "https":
        return http.client.HTTPSConnection(hostname, port, timeout=timeout)
    return http.client.HTTPConnection(hostname, port, timeout=timeout)
