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

import httpx

from tests.local_server import JSONHandler, LocalServer


class CountingProxy(LocalServer):
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self.started: list[float] = []
        self.after_response: tuple[int, Callable[[], None]] | None = None
        self.lock = threading.Lock()
        super().__init__(self._handler())

    def _handler(self):
        proxy = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = self.read_body()
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
                self.send_json(status, content)
                if status == 200:
                    with proxy.lock:
                        proxy.answered += 1
                        hook = proxy.after_response
                        fire = hook is not None and proxy.answered == hook[0]
                    if fire:
                        hook[1]()

        return Handler
