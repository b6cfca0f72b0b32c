"""A small real HTTP proxy in front of an OpenAI-compatible server, for observing a client from outside.

It forwards every POST to `upstream` (which tests may switch), and records how many requests were
in flight at once, when each started, and how many were answered. `after_response(n)` runs once
the n-th response has been sent (tests use it to kill the server mid-run). An upstream that cannot
be reached gets a 502, as a real gateway would answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class CountingProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self.started: list[float] = []
        self.after_response: tuple[int, Callable[[], None]] | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                    proxy.started.append(time.monotonic())
                    upstream = proxy.upstream
                try:
                    path = self.path.removeprefix("/v1")
                    reply = httpx.post(
                        upstream + path,
                        content=body,
                        headers={"Content-Type": "application/json"},
                        timeout=120,
                    )
                    status, content = reply.status_code, reply.content
                except httpx.HTTPError as error:
                    status, content = 502, f"upstream unreachable: {error}".encode()
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                if status == 200:
                    with proxy.lock:
                        proxy.answered += 1
                        hook = proxy.after_response
                        fire = hook is not None and proxy.answered == hook[0]
                    if fire:
                        hook[1]()

        return Handler
