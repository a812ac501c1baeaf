"""A real HTTP/1.1 server on 127.0.0.1 that can be told to misbehave.

Not a mock: it listens on a real TCP port (port 0, so tests run in parallel)
and speaks HTTP/1.1 with keep-alive from worker threads of the test process,
so tests flip its behaviour directly::

    srv = FaultServer({"/cvmfs/x/.cvmfspublished": b"..."})   # or a directory
    srv.fault("500")                    # every request answers 500
    srv.fault("drop", path=".cvmfspublished", times=1)   # once, mid-body
    srv.fault(None)                     # back to normal
    srv.requests                        # [(path, headers, client_port), ...]
    srv.stop()

Faults: "500", "404", "drop" (send the headers with the full Content-Length and
half of the body, then close the connection), "corrupt" (flip the body's first
byte), "stall" (send half the body then nothing until stopped), "trickle" (16 bytes
every 50 ms), "close" (accept, then close without answering), "redirect" (302 to ``redirect_to`` + path).
"""
import http.server
import os
import socket
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        http.server.BaseHTTPRequestHandler.setup(self)
        self.server.owner.track(self.connection)

    def do_GET(self):
        srv = self.server.owner
        path = self.path
        if path.startswith("http://"):          # absolute URL from a proxy client
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        srv.record(self.path, dict(self.headers.items()), self.client_address[1])
        mode = srv.take_fault(path)
        body = srv.content(path)
        if mode == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode in ("500", "404"):
            self.send_error_body(int(mode))
            return
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", srv.redirect_to + path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if body is None:
            self.send_error_body(404)
            return
        if mode == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "trickle":       # a few bytes at a time: alive, but far too slow
            for i in range(0, len(body), 16):
                if srv.stopped.wait(0.05):
                    break
                self.wfile.write(body[i:i + 16])
                self.wfile.flush()
            return
        if mode in ("drop", "stall"):
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if mode == "stall":
                srv.stopped.wait(60)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def send_error_body(self, code):
        body = ("error %d\n" % code).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FaultServer(object):
    """Serve ``files`` (dict URL path -> bytes, or a directory) with injectable faults."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self.redirect_to = ""   # base URL for the "redirect" fault
        self._conns = []
        self._faults = []       # [mode, path_substring or None, times left or None]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def fault(self, mode, path=None, times=None):
        """Misbehave with ``mode`` for requests whose path contains ``path``.

        ``times``: how many requests (None = until changed); ``mode=None`` clears.
        """
        with self._lock:
            if mode is None:
                self._faults = []
            else:
                self._faults.append([mode, path, times])

    def take_fault(self, path):
        with self._lock:
            for f in self._faults:
                mode, sub, times = f
                if sub is not None and sub not in path:
                    continue
                if times is not None:
                    if times <= 0:
                        continue
                    f[2] = times - 1
                return mode
        return None

    def track(self, conn):
        with self._lock:
            self._conns.append(conn)

    def record(self, path, headers, port):
        with self._lock:
            self.requests.append((path, headers, port))

    def content(self, path):
        if isinstance(self.files, dict):
            return self.files.get(path)
        full = os.path.join(self.files, path.lstrip("/"))
        if ".." in path.split("/") or not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            return f.read()

    def drop_connections(self):
        """Cut open keep-alive connections (as a server's idle timeout does)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        """Stop listening and cut every open (keep-alive) connection, like a dead server."""
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.drop_connections()


def dead_port():
    """A 127.0.0.1 port nobody listens on (bound then closed): connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
