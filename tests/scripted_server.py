"""A small real OpenAI-compatible HTTP server whose replies a test decides, and which counts requests.

`transformers serve` with the tiny model (tests/conftest.py `openai_server`) answers real noise, but it
cannot answer "SPECIALTY: 030" or "Yes" on cue, nor fail on cue. This server answers
`POST /v1/chat/completions` and `POST /v1/completions` with `answer(path, prompt)`: a string is the reply
text, an int an HTTP error status. The openai backend talks to it as to any endpoint. `requests` records
(path, prompt) of every request, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from tests.local_server import JSONHandler, LocalServer

Answer = Callable[[str, str], "str | int"]


class ScriptedServer(LocalServer):
    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        super().__init__(self._handler())

    def count(self, marker: str = "") -> int:
        """Requests whose prompt contains `marker`."""
        with self.lock:
            return sum(marker in prompt for _, prompt in self.requests)

    def _handler(self):
        server = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = json.loads(self.read_body())
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
                self.send_json(status, payload)

        return Handler
