"""A real OpenAI-compatible HTTP server on 127.0.0.1 whose replies are canned but realistic.

`transformers serve` with the tiny model answers gibberish, so it cannot say "## Step 1:" on cue;
this server answers each trace prompt (med-s1's, by a phrase of it) the way Gemini does, built from
the prompt's own text -- preamble included, which the transforms' post-processing has to remove -- so
the transforms run end to end through the openai backend (HTTP, JSON, concurrency, retries). It counts
the requests and how many were in flight at once; `delay_s` makes each answer take that long;
`responder` replaces the canned replies (a reply of None answers HTTP 500).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

from tests.local_server import JSONHandler, LocalServer


def _between(prompt: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\s*(.*?)\s*" + re.escape(end), prompt, re.S)
    return match.group(1) if match else ""


def _sentences(text: str, n: int) -> list[str]:
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text) if p.strip()]
    size = max(1, -(-len(parts) // n))
    return [" ".join(parts[i : i + size]) for i in range(0, len(parts), size)] or ["No reasoning given."]


def _steps(text: str, n: int = 4) -> str:
    return "\n\n".join(f"## Step {i}: Point {i}\n{chunk}" for i, chunk in enumerate(_sentences(text, n), 1))


def canned_reply(prompt: str) -> str:
    """What a capable model answers to each of med-s1's trace prompts, built from the prompt."""
    cot = next(
        (
            text
            for start in ("transform:\n", "trace:\n", "reasoning:\n")
            if (text := _between(prompt, start, "\nIMPORTANT"))
        ),
        "",
    )
    if "Merge these two consecutive steps" in prompt:
        first = _between(prompt, "## Step 1:", "## Step 2:")
        return f"## Step 1+2: {first.splitlines()[0] if first else 'Merged'}\nBoth steps, merged."
    if "categorically wrong" in prompt:
        return "STEP: Conclusion\nTherefore this is a viral infection.\nRESPONSE: A viral infection."
    if "improve this low-quality chain of thought" in prompt:
        steps = re.split(r"##\s*Step\s*\d+:", cot)
        body = [s.strip() for s in steps if s.strip()]
        return "Improved:\n\n" + _steps(
            " ".join(body) + " Finally, every finding is checked again.", len(body) + 1
        )
    if "clear, step-by-step format" in prompt:
        return "Here is the step-by-step reasoning:\n\n" + _steps(cot)
    if "single, comprehensive sentence" in prompt:
        return "  The findings,\n taken together, point to the answer given  "
    if "bullet-point list" in prompt:
        return "Key facts:\n" + "\n".join(f"- {s}" if i % 2 else s for i, s in enumerate(_sentences(cot, 4)))
    if "well-structured markdown" in prompt:
        return (
            "## Findings\n\n| sign | meaning |\n|---|---|\n| a | b |\n\n## Conclusion\n"
            + _sentences(cot, 2)[-1]
        )
    if "supporting clinical evidence" in prompt:
        return "Sure.\n## Step 1: Findings\nThe signs.\n# Evidence: a case\n\n## Step 2: Answer\nThe answer."
    if "determine the most appropriate note format" in prompt:
        return " isbar\n"
    if "clinical note." in prompt:
        note = "Here is the note:\n## Identification\nA clinician.\n# Situation\n\n\n\n"
        return note + _sentences(cot, 2)[0]
    if "decision tree format" in prompt:
        return "Decision tree:\nKey finding?\n  --> yes: next test\n  ->no: stop"
    if "Questions and Answers" in prompt:
        return (
            "Here are the Q&As:\nQ: What is found?\n   A:  "
            + _sentences(cot, 2)[0]
            + "\n  Q: So?\nA: The answer."
        )
    if "Socratic dialogue" in prompt:
        return "A dialogue follows\nCardiologist: What do we see?\n  Internist:   " + _sentences(cot, 2)[0]
    if "Chain of Thought (CoT) reasoning method" in prompt:
        return "\nOkay, here is my chain of thought.\nHmm, the patient has these findings.\nSo that is it."
    if "challenging medical exam question" in prompt:
        return (
            "Question: A patient presents with the case's findings.\nLaboratory results follow.\n"
            "Answer: The diagnosis"
        )
    if "Edit the reasoning with the following changes" in prompt:
        return "Hmm, the findings suggest the diagnosis. Wait, the history fits too."
    if (
        "Filter from the case report detailed reasoning" in prompt
        or "Extract from the following case" in prompt
    ):
        return "The presentation suggests the diagnosis.\nThe alternatives are less likely."
    return "I cannot help with that."


class CannedLLMServer(LocalServer):
    def __init__(self, responder: Callable[[str], str | None] = canned_reply, delay_s: float = 0.0):
        self.responder = responder
        self.delay_s = delay_s
        self.prompts: list[str] = []
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(JSONHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connections

            def do_GET(self) -> None:  # /stats: for a client in another process
                with server.lock:
                    stats = {"requests": len(server.prompts), "max_in_flight": server.max_in_flight}
                self.send_json(200, stats)

            def do_POST(self) -> None:
                body = json.loads(self.read_body())
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.prompts.append(prompt)
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    text = server.responder(prompt)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                status = 200 if text is not None else 500
                reply = {
                    "id": "canned",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "canned"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(prompt.split()),
                        "completion_tokens": 5,
                        "total_tokens": 0,
                    },
                }
                self.send_json(status, reply if text is not None else {"error": {"message": "boom"}})

        super().__init__(Handler)

    @property
    def requests(self) -> int:
        return len(self.prompts)


if __name__ == "__main__":  # python -m tests.canned_llm DELAY_S: serve until killed, the base URL on stdout
    import sys

    with CannedLLMServer(delay_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as running:
        print(running.base_url, flush=True)
        threading.Event().wait()
