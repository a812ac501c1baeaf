"""HTTP downloads for build.py: timeouts, retries with backoff, a verified download cache.

The cache is content-addressed: a file whose checksum the repository metadata
names is stored under that checksum, so a second build downloads nothing and a
changed upstream file can never be mistaken for a cached one.  Files are
written to a temporary name, verified (size and digest), then renamed into
place; a mismatch deletes the file and fails naming the URL and both digests.
"""
import hashlib
import os
import sys
import tempfile
import time

import requests

from launcher import envvars
from launcher.errors import CvmfsexecError

CHUNK = 256 * 1024
# repodata names 'sha' for SHA-1 in old repositories.
HASH_NAMES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256",
              "sha384": "sha384", "sha512": "sha512", "md5": "md5"}
RETRY_STATUS = frozenset([408, 429, 500, 502, 503, 504])


class DownloadError(CvmfsexecError):
    """A download failed: the message names the URL and the HTTP status or network error."""


class ChecksumError(CvmfsexecError):
    """A download's size or digest is not what the repository metadata says."""


def default_cache_dir():
    return envvars.get("CVMFSEXEC_DOWNLOAD_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cvmfsexec", "downloads")


def hash_algorithm(name):
    algo = HASH_NAMES.get((name or "").lower())
    if algo is None:
        raise CvmfsexecError("unsupported checksum type %r in repository metadata" % name)
    return algo


def file_digest(path, algo):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def describe(exc):
    """A short reason for a requests exception (its str() nests urllib3's whole story)."""
    cause = exc
    while getattr(cause, "__context__", None) is not None or getattr(cause, "reason", None):
        inner = getattr(cause, "reason", None) or cause.__context__
        if inner is None or inner is cause:
            break
        cause = inner
    text = str(cause)
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "cannot resolve the host name (no network or DNS?)"
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return "%s: %s" % (exc.__class__.__name__, text[:200])


class Progress(object):
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, label, total, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label = label
        self.total = total
        self.done = 0
        self.last = 0.0

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last > 0.1:
            self.last = now
            self._draw()

    def _draw(self):
        mb = self.done / 1e6
        if self.total:
            pct = min(100, 100 * self.done // self.total)
            bar = "#" * (pct // 5)
            line = "%-40.40s [%-20s] %3d%% %6.1f MB" % (self.label, bar, pct, mb)
        else:
            line = "%-40.40s %6.1f MB" % (self.label, mb)
        self.stream.write("\r" + line)
        self.stream.flush()

    def finish(self):
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


class Fetcher(object):
    """Downloads with a requests session; ``retries`` extra attempts, exponential backoff."""

    def __init__(self, cache_dir=None, retries=3, backoff=1.0, timeout=(10, 60),
                 progress_stream=None):
        self.cache_dir = cache_dir or default_cache_dir()
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.progress_stream = progress_stream
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "cvmfsexec-build"
        self.downloads = 0      # files actually transferred (cache misses), for reporting
        self.cache_hits = 0

    def close(self):
        self.session.close()

    # --- low level -----------------------------------------------------------
    def _request(self, url, stream=False):
        """GET with retries; returns the response (status 200) or raises DownloadError.

        404 is returned to the caller (status checked there) so that a missing
        repodata can fall back to an HTML index; other 4xx fail at once, 5xx and
        network errors are retried.
        """
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                r = self.session.get(url, stream=stream, timeout=self.timeout)
            except requests.RequestException as e:
                last = describe(e)
                continue
            if r.status_code == 200 or r.status_code == 404:
                return r
            last = "HTTP status %d" % r.status_code
            r.close()
            if r.status_code not in RETRY_STATUS:
                break
        raise DownloadError("download of %s failed: %s" % (url, last),
                            "check the network, proxy settings, or the repository URL "
                            "(--repo-url NAME=URL)")

    def get(self, url, missing_ok=False):
        """The body of a small file (metadata, index pages); None for 404 if ``missing_ok``."""
        r = self._request(url)
        with r:
            if r.status_code == 404:
                if missing_ok:
                    return None
                raise DownloadError("download of %s failed: HTTP status 404 (not found)" % url)
            try:
                return r.content
            except requests.RequestException as e:
                raise DownloadError("download of %s failed while reading: %s" % (url, e))

    # --- cached, verified downloads ----------------------------------------------
    def cache_path(self, url, checksum=None, checksum_type="sha256"):
        base = os.path.basename(url.rstrip("/")) or "index"
        if checksum:
            key = "%s-%s" % (hash_algorithm(checksum_type), checksum.lower())
        else:
            # Without a checksum (HTML-index repositories) the URL is the key; the
            # caller must verify the content by other means (the RPM's own digests).
            key = "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]
        return os.path.join(self.cache_dir, key[:12], "%s-%s" % (key, base))

    def download(self, url, size=None, checksum=None, checksum_type="sha256"):
        """Path of the verified file for ``url``, from the cache or freshly downloaded."""
        path = self.cache_path(url, checksum, checksum_type)
        if os.path.exists(path):
            try:
                self._verify(path, url, size, checksum, checksum_type)
                self.cache_hits += 1
                return path
            except ChecksumError:
                os.unlink(path)   # a damaged cache entry: fetch it again
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(path))
        except OSError as e:
            raise CvmfsexecError("cannot write to the download cache %s: %s"
                                 % (self.cache_dir, e.strerror),
                                 "set CVMFSEXEC_DOWNLOAD_CACHE to a writable directory")
        try:
            with os.fdopen(fd, "wb") as out:
                self._stream_to(url, out)
            self._verify(tmp, url, size, checksum, checksum_type)
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise CvmfsexecError("cannot write %s to the download cache: %s" % (url, e.strerror),
                                 "check the free space in %s (CVMFSEXEC_DOWNLOAD_CACHE)"
                                 % self.cache_dir)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.downloads += 1
        return path

    def _stream_to(self, url, out):
        for attempt in range(self.retries + 1):
            r = self._request(url, stream=True)
            with r:
                if r.status_code == 404:
                    raise DownloadError("download of %s failed: HTTP status 404 (not found)" % url,
                                        "the repository metadata may be stale; try again later")
                total = int(r.headers.get("Content-Length") or 0)
                progress = Progress(os.path.basename(url), total, self.progress_stream)
                out.seek(0)
                out.truncate()
                try:
                    for block in r.iter_content(CHUNK):
                        out.write(block)
                        progress.update(len(block))
                except requests.RequestException as e:
                    if attempt == self.retries:
                        raise DownloadError("download of %s failed while reading: %s" % (url, e))
                    time.sleep(self.backoff * (2 ** attempt))
                    continue
                finally:
                    progress.finish()
                return

    def _verify(self, path, url, size, checksum, checksum_type):
        actual_size = os.path.getsize(path)
        if size is not None and actual_size != int(size):
            raise ChecksumError("size mismatch for %s: expected %d bytes, got %d"
                                % (url, int(size), actual_size),
                                "the download was truncated or the repository changed; retry")
        if checksum:
            algo = hash_algorithm(checksum_type)
            actual = file_digest(path, algo)
            if actual != checksum.lower():
                raise ChecksumError("%s mismatch for %s: expected %s, got %s"
                                    % (algo, url, checksum.lower(), actual),
                                    "the file is corrupt or the repository changed; retry later "
                                    "or use another mirror")
