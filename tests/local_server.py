"""What the tests' local HTTP servers share: a real server on 127.0.0.1 (a free port), served from a
thread while in a `with` block, and a handler that reads and writes JSON without logging."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a burst of concurrent requests is not refused


class LocalServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JSONHandler(BaseHTTPRequestHandler):
    # A reply is written as headers, then body: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms), which no real server adds.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def send_json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        """Send `payload` (an object to encode, or bytes as they are) with its length."""
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
