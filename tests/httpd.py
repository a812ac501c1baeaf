"""A real static HTTP server on 127.0.0.1 for tests (run as a child process).

    python3 tests/httpd.py DIR [--port-file FILE]

Binds an ephemeral port, writes it to --port-file (or prints it), serves DIR
with HTTP/1.1 keep-alive until killed.
"""
import argparse
import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, the body waits for
    # the client's delayed ACK (40 ms per keep-alive request on Linux).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients (the client under test, killed readers) drop connections on
        # purpose; a reset is not a server failure worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--port-file")
    args = ap.parse_args()
    handler = functools.partial(Handler, directory=os.path.abspath(args.directory))
    server = Server(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.rename(tmp, args.port_file)
    else:
        print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
