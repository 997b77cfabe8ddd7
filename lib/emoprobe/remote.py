"""OpenAI-compatible HTTP backend: vLLM servers, Gemini's OpenAI endpoint, any ``/v1/chat/completions``.

Spec keys (``{"backend": "openai", ...}``):

``model``           served model name (required)
``base_url``        e.g. ``http://localhost:8000/v1`` (required)
``api_key_env``     name of the environment variable holding the key (default ``OPENAI_API_KEY``); the key
                    may be absent (local vLLM). A literal ``api_key`` in the spec is refused: keys come only
                    from the environment and never enter fingerprints, stores or messages.
``max_concurrency`` parallel requests (ThreadPoolExecutor), default 4
``timeout_s``       per request, default 120
``max_retries``     retries after the first attempt for connection errors, timeouts, 429 and 5xx (default 4),
                    exponential backoff ``backoff_s * 2**attempt`` (cap ``backoff_max_s``) times a jitter in
                    [0.5, 1.5) drawn from a RNG seeded by the request index (deterministic); a 429/503 with
                    ``Retry-After`` (seconds or an HTTP date; also ``retry-after-ms``) waits what the server
                    asked, capped at ``retry_after_max_s`` (default 60)
``max_tokens``      default 64; ``temperature`` default 0; ``seed`` sent when given
``image_format``    ``jpeg`` (default) or ``png``; ``jpeg_quality`` default 90
``as_video``        False: frames as several ``image_url`` parts; True: one ``video_url`` part with a
                    ``data:video/jpeg;base64,<frame1>,<frame2>,...`` URL (vLLM's format for pre-decoded frames)
``timestamps``      True (default): a "Frame i (t=..s):" text part before each image (not with as_video)
``revision``        optional free text naming the served weights (enters the fingerprint)

Faults: connection errors, timeouts, 429 and 5xx are retried (bounded), then the item becomes
``Answer.failed(reason)`` and the run goes on; other 4xx fail at once; a malformed reply (invalid JSON, no
choices, empty content) fails with its reason. The retry loop is ours (the client's is disabled) so that
every attempt is counted in ``Answer.extra["attempts"]`` (failed answers too) and tests can use millisecond
backoffs.

Secrets: the value of the variable named by ``api_key_env`` (whatever its name) is registered with
:func:`emoprobe.store.register_secret_env`, so a server that echoes it (error bodies do) never gets it into
answers, errors, the run store, logs or notebooks; Authorization / bearer values are scrubbed as well.

Tokens: the API reports only ``prompt_tokens`` (text + images together) and ``completion_tokens``. They go to
``Answer.extra``; ``n_visual_tokens``/``n_text_tokens`` stay ``None`` (unknown) rather than a wrong split.
Scores: chat completions give no label distribution, so ``score=True`` yields ``scores=None``.
"""
from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np

from emoprobe.models import Answer, Backend, ClassifyRequest, DescribeRequest, ModelError
from emoprobe.parse import parse_label
from emoprobe.store import scrub

DEFAULTS = {
    "api_key_env": "OPENAI_API_KEY",
    "max_concurrency": 4,
    "timeout_s": 120.0,
    "max_retries": 4,
    "backoff_s": 1.0,
    "backoff_max_s": 30.0,
    "retry_after_max_s": 60.0,
    "max_tokens": 64,
    "temperature": 0.0,
    "seed": None,
    "image_format": "jpeg",
    "jpeg_quality": 90,
    "as_video": False,
    "timestamps": True,
    "revision": None,
}
# Settings that change the answer (enter the fingerprint); the rest only change how we wait.
_ANSWER_SETTINGS = ("max_tokens", "temperature", "seed", "image_format", "jpeg_quality", "as_video", "timestamps")


class _Permanent(Exception):
    def __init__(self, msg: str, attempts: int = 1):
        super().__init__(msg)
        self.attempts = attempts


def retry_after_s(headers) -> float | None:
    """Seconds a 429/503 reply asks us to wait (``retry-after-ms``, ``Retry-After`` as seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            import email.utils

            when = email.utils.parsedate_to_datetime(ra)
            if when is None:
                return None
            import datetime as _dt

            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.timezone.utc)
            return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None


def encode_image(frame: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> str:
    """A (H, W, 3) uint8 frame as base64 JPEG/PNG (deterministic)."""
    from PIL import Image

    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    elif fmt == "png":
        Image.fromarray(arr).save(buf, format="PNG")
    else:
        raise ValueError(f"image_format must be jpeg or png, got {fmt!r}")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIBackend(Backend):
    def __init__(self, spec: dict):
        spec = dict(spec)
        if "api_key" in spec:
            raise ModelError(f"openai model {spec.get('model')!r}: do not put an API key in the spec; set an "
                             "environment variable and name it in 'api_key_env'")
        for k in ("model", "base_url"):
            if not spec.get(k):
                raise ModelError(f"openai backend spec needs {k!r}: {sorted(spec)}")
        unknown = set(spec) - set(DEFAULTS) - {"backend", "model", "base_url", "name"}
        if unknown:
            raise ModelError(f"openai model {spec['model']!r}: unknown spec keys {sorted(unknown)}; "
                             f"known: {sorted(set(DEFAULTS) | {'model', 'base_url', 'name'})}")
        self.spec = {"backend": "openai", **DEFAULTS, **spec}
        s = self.spec
        if s["image_format"] not in ("jpeg", "png"):
            raise ModelError(f"openai model {s['model']!r}: image_format must be jpeg or png")
        if int(s["max_concurrency"]) < 1 or int(s["max_retries"]) < 0:
            raise ModelError(f"openai model {s['model']!r}: max_concurrency >= 1 and max_retries >= 0 required")
        self.name = s.get("name") or s["model"]
        from emoprobe import store as _store

        _store.register_secret_env(s["api_key_env"])  # whatever its name, its value is a secret
        _store.install_log_scrubber()
        self._client = None
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------------ protocol
    def fingerprint(self) -> dict:
        u = urlparse(self.spec["base_url"])
        return {
            "backend": "openai",
            "model": self.spec["model"],
            "host": u.netloc,
            "path": u.path.rstrip("/"),
            "revision": self.spec["revision"],
            "settings": {k: self.spec[k] for k in _ANSWER_SETTINGS},
        }

    def classify(self, requests: list[ClassifyRequest], score: bool = False) -> list[Answer]:
        return self._map(requests, self._classify_one)

    def describe(self, requests: list[DescribeRequest]) -> list[Answer]:
        return self._map(requests, self._describe_one)

    # ------------------------------------------------------------------ messages
    def _image_parts(self, frames, t) -> list[dict]:
        s = self.spec
        mime = "image/jpeg" if s["image_format"] == "jpeg" else "image/png"
        return [{"type": "image_url", "image_url": {"url": f"data:{mime};base64,"
                                                        f"{encode_image(f, s['image_format'], s['jpeg_quality'])}"}}
                for f in frames]

    def build_content(self, frames: np.ndarray, t: np.ndarray, prompt: str,
                      context: list[str] | None = None) -> list[dict]:
        """The user message content: frames (or a video), MSCE context interleaved, then the prompt."""
        s = self.spec
        frames = np.asarray(frames)
        if frames.ndim != 4 or len(frames) == 0:
            raise ValueError(f"frames must be a non-empty (T, H, W, 3) array, got shape {frames.shape}")
        t = np.asarray(t, dtype=float) if t is not None else np.full(len(frames), np.nan)
        if len(t) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(t)} timestamps")
        content: list[dict] = []
        if context is not None:
            if len(context) != len(frames) - 1:
                raise ValueError(f"MSCE context needs one text per gap: {len(frames)} keyframes, "
                                 f"{len(context)} texts")
            images = self._image_parts(frames, t)
            for i, img in enumerate(images):
                content.append({"type": "text", "text": f"FrameID {i + 1} (t={t[i]:.2f}s):"})
                content.append(img)
                if i < len(context):
                    content.append({"type": "text", "text": f"Motion: {context[i]}"})
        elif s["as_video"]:
            if s["image_format"] != "jpeg":
                raise ValueError("as_video sends JPEG frames (data:video/jpeg); set image_format='jpeg'")
            data = ",".join(encode_image(f, "jpeg", s["jpeg_quality"]) for f in frames)
            content.append({"type": "video_url", "video_url": {"url": f"data:video/jpeg;base64,{data}"}})
        else:
            for i, img in enumerate(self._image_parts(frames, t)):
                if s["timestamps"]:
                    content.append({"type": "text", "text": f"Frame {i + 1} (t={t[i]:.2f}s):"})
                content.append(img)
        content.append({"type": "text", "text": prompt})
        return content

    # ------------------------------------------------------------------ HTTP
    def _get_client(self):
        with self._client_lock:
            if self._client is None:
                import openai

                key = os.environ.get(self.spec["api_key_env"]) or "EMPTY"
                self._client = openai.OpenAI(base_url=self.spec["base_url"], api_key=key,
                                             timeout=float(self.spec["timeout_s"]), max_retries=0)
            return self._client

    def _chat(self, content: list[dict], index: int) -> tuple[str, dict, int]:
        """POST one chat completion with bounded retries; returns (text, usage, attempts)."""
        import openai

        s = self.spec
        rng = random.Random(index)
        body = {"model": s["model"], "messages": [{"role": "user", "content": content}],
                "max_tokens": int(s["max_tokens"]), "temperature": float(s["temperature"])}
        if s["seed"] is not None:
            body["seed"] = int(s["seed"])
        last = None
        asked = None  # seconds the server asked us to wait (Retry-After on 429/503)
        for attempt in range(int(s["max_retries"]) + 1):
            if attempt:
                delay = min(float(s["backoff_s"]) * 2 ** (attempt - 1), float(s["backoff_max_s"]))
                delay *= 0.5 + rng.random()
                if asked is not None:
                    delay = max(delay, min(asked, float(s["retry_after_max_s"])))
                time.sleep(delay)
            asked = None
            try:
                raw = self._get_client().chat.completions.with_raw_response.create(**body)
            except openai.APIStatusError as e:
                code = e.status_code
                last = f"HTTP {code}: {_short(e.message)}"
                if code in (429, 503):
                    asked = retry_after_s(getattr(e.response, "headers", None))
                if code == 429 or code >= 500 or code == 408:
                    continue
                raise _Permanent(last, attempt + 1)
            except openai.APITimeoutError:
                last = f"timeout after {s['timeout_s']} s"
                continue
            except openai.APIConnectionError as e:
                last = f"connection error: {_short(str(e.__cause__ or e))}"
                continue
            try:
                return (*self._read_reply(raw.http_response.text), attempt + 1)
            except _Permanent as e:
                e.attempts = attempt + 1
                raise
        raise _Permanent(f"gave up after {int(s['max_retries']) + 1} attempts; last: {last}",
                         int(s["max_retries"]) + 1)

    @staticmethod
    def _read_reply(text: str) -> tuple[str, dict]:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise _Permanent(f"malformed reply (invalid JSON: {e.msg} at {e.pos}): {_short(text)}")
        if not isinstance(obj, dict):
            raise _Permanent(f"malformed reply (not a JSON object): {_short(text)}")
        choices = obj.get("choices")
        if not choices or not isinstance(choices, list):
            raise _Permanent(f"malformed reply (no choices): {_short(text)}")
        msg = (choices[0] or {}).get("message") or {}
        content = msg.get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            reason = choices[0].get("finish_reason")
            raise _Permanent(f"malformed reply (empty content, finish_reason={reason!r})")
        usage = obj.get("usage") or {}
        return content, {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}

    def _call(self, index: int, build) -> tuple[str | None, dict, str | None]:
        try:
            content = build()
        except ValueError as e:
            return None, {"attempts": 0}, f"bad request for {self.name}: {e}"
        try:
            text, usage, attempts = self._chat(content, index)
        except _Permanent as e:
            return None, {"attempts": e.attempts}, scrub(f"{self.name} at {self.spec['base_url']}: {e}")
        return scrub(text), {**usage, "attempts": attempts}, None

    def _classify_one(self, index: int, req: ClassifyRequest) -> Answer:
        text, extra, err = self._call(index, lambda: self.build_content(req.frames, req.t, req.prompt,
                                                                          req.context))
        if err:
            a = Answer.failed(err)
            a.n_visual_tokens = a.n_text_tokens = None
            a.extra = extra or None
            return a
        label, method = parse_label(text, req.labels)
        return Answer(text=text, label=label, status="ok" if label else "unparsed", parse_method=method,
                      scores=None, n_visual_tokens=None, n_text_tokens=None, extra=extra)

    def _describe_one(self, index: int, req: DescribeRequest) -> Answer:
        text, extra, err = self._call(index, lambda: self.build_content(req.frames, req.t, req.prompt))
        if err:
            a = Answer.failed(err)
            a.n_visual_tokens = a.n_text_tokens = None
            a.extra = extra or None
            return a
        return Answer(text=text, status="ok", parse_method="text", n_visual_tokens=None, n_text_tokens=None,
                      extra=extra)

    def _map(self, requests, fn) -> list[Answer]:
        n = min(int(self.spec["max_concurrency"]), max(1, len(requests)))
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="emoprobe-openai") as ex:
            return list(ex.map(fn, range(len(requests)), requests))


def _short(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."
