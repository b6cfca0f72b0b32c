"""A small real OpenAI-compatible HTTP server whose replies a test decides, and which counts requests.

`transformers serve` with the tiny model (tests/conftest.py `openai_server`) answers real noise, but it
cannot answer "SPECIALTY: 030" or "Yes" on cue, nor fail on cue. This server answers
`POST /v1/chat/completions` and `POST /v1/completions` with `answer(path, prompt)`: a string is the reply
text, an int an HTTP error status. The openai SDK talks to it as to any endpoint. `requests` records
(path, prompt) of every request, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = Callable[[str, str], "str | int"]


class ScriptedServer:
    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def count(self, marker: str = "") -> int:
        """Requests whose prompt contains `marker`."""
        with self.lock:
            return sum(marker in prompt for _, prompt in self.requests)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                chat = self.path.endswith("/chat/completions")
                prompt = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
                with server.lock:
                    server.requests.append((self.path, prompt))
                reply = server.answer(self.path, prompt)
                if isinstance(reply, int):
                    status, payload = reply, {"error": {"message": f"scripted error {reply}"}}
                else:
                    status = 200
                    choice = {"index": 0, "finish_reason": "stop"}
                    choice |= (
                        {"message": {"role": "assistant", "content": reply}} if chat else {"text": reply}
                    )
                    payload = {
                        "id": "scripted",
                        "object": "chat.completion" if chat else "text_completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [choice],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                content = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        return Handler
