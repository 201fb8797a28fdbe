#!/usr/bin/env python3
"""A tiny upstream application for floodgate's local stack (make run).

Answers every request, whatever its method and path (/, /login, /healthz, ...),
with 200 and the body "hello from upstream". Standard library only.

    python3 scripts/upstream.py [--host 127.0.0.1] [--port 8080]
"""

import argparse
import http.server
import sys

BODY = b"hello from upstream\n"


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps Envoy's connections open between requests.
    protocol_version = "HTTP/1.1"
    server_version = "upstream"
    sys_version = ""

    def _answer(self, with_body=True):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)  # discard the request body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if with_body:
            self.wfile.write(BODY)

    def do_HEAD(self):
        self._answer(with_body=False)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format, *args):
        pass  # one line per request would bury the stack's banner and logs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    try:
        server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as e:
        sys.exit(f"upstream: cannot listen on {args.host}:{args.port}: {e.strerror}")
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
