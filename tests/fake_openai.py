"""A real OpenAI-compatible HTTP server on loopback for tests (``/v1/chat/completions``).

The behaviour is chosen by a marker in the last text part of the request: ``MODE=<mode>`` (the rest of the prompt) with modes
``ok:<answer>``, ``500once`` (500 on the first attempt of that prompt, then ok), ``500always``, ``429once``,
``400``, ``badjson``, ``nochoices``, ``empty``, ``slow:<seconds>`` (then ok), ``429ra:<s>`` (429 with
``Retry-After: <s>`` on the first attempt, then ok), ``503ra:<s>`` (always 503 with ``Retry-After: <s>``),
``echo400`` (400 whose error body echoes the request's Authorization header, as some servers do) and
``echook`` (answers ``happiness`` followed by the echoed header). Without a marker it answers ``happiness``. The server records every request (headers and body) and the peak number of requests in flight.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, port: int = 0, echo_auth: bool = False):
        self.echo_auth = echo_auth  # a hostile server: every default answer echoes the Authorization header
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                outer._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _send(self, h, code: int, body: str | bytes, ctype="application/json", headers=None):
        data = body.encode() if isinstance(body, str) else body
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h):
        n = int(h.headers.get("Content-Length", 0))
        body = json.loads(h.rfile.read(n))
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.requests.append({"path": h.path, "headers": {k.lower(): v for k, v in h.headers.items()}, "body": body})
        try:
            if h.path != "/v1/chat/completions":
                return self._send(h, 404, '{"error": {"message": "not found"}}')
            parts = body["messages"][-1]["content"]
            prompt = [p["text"] for p in parts if p.get("type") == "text"][-1]
            m = re.search(r"MODE=(.*)$", prompt, flags=re.S)
            mode = m.group(1) if m else ("echook" if self.echo_auth else "ok:happiness")
            with self.lock:
                k = self.attempts[prompt] = self.attempts.get(prompt, 0) + 1
            answer = "happiness"
            auth = h.headers.get("Authorization", "")
            if mode.startswith("429ra:") and k == 1:
                return self._send(h, 429, '{"error": {"message": "rate limited"}}',
                                  headers={"Retry-After": mode[6:].split()[0]})
            if mode.startswith("503ra:"):
                return self._send(h, 503, '{"error": {"message": "overloaded"}}',
                                  headers={"Retry-After": mode[6:].split()[0]})
            if mode.startswith("echo400"):
                return self._send(h, 400, json.dumps({"error": {"message": f"invalid credentials: {auth}"}}))
            if mode.startswith("echook"):
                answer = f"happiness (you sent Authorization: {auth})"
            elif mode.startswith("ok:"):
                answer = mode[3:]
            elif mode.startswith("slow:"):
                time.sleep(float(mode[5:].split()[0]))
            elif mode == "500once" and k == 1 or mode == "500always":
                return self._send(h, 500, '{"error": {"message": "internal error"}}')
            elif mode == "429once" and k == 1:
                return self._send(h, 429, '{"error": {"message": "slow down"}}')
            elif mode == "400":
                return self._send(h, 400, '{"error": {"message": "bad request: too many images"}}')
            elif mode == "badjson":
                return self._send(h, 200, '{"choices": [ {"message": ')
            elif mode == "nochoices":
                return self._send(h, 200, json.dumps({"id": "x", "choices": []}))
            elif mode == "empty":
                return self._send(h, 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": ""},
                                                                   "finish_reason": "length"}]}))
            n_img = sum(p.get("type") in ("image_url", "video_url") for p in parts)
            reply = {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": answer}}],
                     "usage": {"prompt_tokens": 10 + 64 * n_img, "completion_tokens": 2,
                               "total_tokens": 12 + 64 * n_img}}
            return self._send(h, 200, json.dumps(reply))
        finally:
            with self.lock:
                self.in_flight -= 1
