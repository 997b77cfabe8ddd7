"""The loop every chapter and the CLI call: clips -> frames -> model -> parsed answers, persisted at once.

``classify`` (and the thin ``describe`` / ``msce`` on top of the same engine):

* each clip gets a run-store key (:func:`emoprobe.store.key`) from the model fingerprint, the clip id and its
  content hash (manifest ``sha256`` column, else the file's bytes), the sampling spec
  (``sampling.spec_key``), transform, rendered prompt text, label list, seed, shuffle seed, ``score`` and
  :func:`emoprobe.store.input_code_version`;
* a stored answer is reused (``cached=True``); stored failures too, unless ``retry_failed=True``;
* the rest is sampled (``sampling.sample``), optionally shuffled (``sampling.shuffle`` with a per-clip seed
  derived from ``shuffle_seed`` and the clip id), transformed (``transforms.apply``) and sent to the backend
  in batches; every batch is committed to the store as soon as it returns;
* a clip whose frames cannot be decoded (or hashed, or transformed) becomes a ``failed`` row with the reason;
  a backend exception fails the rows of that batch with the reason; nothing is dropped;
* CUDA out-of-memory (``torch.cuda.OutOfMemoryError`` or a RuntimeError saying "out of memory") halves the
  batch and retries, down to 1; a single item that still does not fit fails with the reason; the smaller
  batch size is kept for the rest of the run.

Output columns: ``clip_id, label, pred, status, parse_method, raw, scores (JSON str or None),
n_visual_tokens, n_text_tokens, n_frames, capped, error, key, cached, extra (JSON str or None)``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pandas as pd

from emoprobe import labels as _labels
from emoprobe import prompts as _prompts
from emoprobe import store as _store
from emoprobe.models import Answer, Backend, ClassifyRequest, DescribeRequest

log = logging.getLogger("emoprobe.run")

# Requests handed to the backend per call (and committed to the store per transaction); the backend splits them
# into forward passes of its own batch size (hf: spec ``batch_size``).
DEFAULT_BATCH_SIZE = 8

COLUMNS = ["clip_id", "label", "pred", "status", "parse_method", "raw", "scores", "n_visual_tokens",
           "n_text_tokens", "n_frames", "capped", "error", "key", "cached", "extra"]


# ------------------------------------------------------------------------------------------------ helpers
def load_backend(model: dict | str | Backend) -> tuple[Backend, str]:
    """``(backend, display name)`` for a spec dict / string or an already loaded backend."""
    if isinstance(model, Backend) or (hasattr(model, "classify") and hasattr(model, "fingerprint")):
        spec = getattr(model, "spec", {}) or {}
        name = getattr(model, "name", None) or spec.get("name") or spec.get("model") or type(model).__name__
        return model, str(name)
    from emoprobe import models

    spec = {"backend": "hf", "model": model} if isinstance(model, str) else dict(model)
    name = spec.get("name") or spec.get("model")
    key = _backend_key(models.resolve(spec))
    if _LAST_BACKEND.get("key") != key:
        release_backends()  # free the previous model before loading the next (GPU memory)
        _LAST_BACKEND.update(key=key, backend=models.load(spec))
    return _LAST_BACKEND["backend"], str(name)


# The most recently loaded backend, reused while the same spec (and the same files on disk) is asked for again:
# chapters call classify once per condition with the same spec dict, and reloading + fingerprinting a model
# costs far more than answering a few clips (issue 11). Only one is kept, and it is dropped before another loads.
_LAST_BACKEND: dict = {}


def _backend_key(spec: dict) -> str:
    """The spec (display name excluded) plus the size and mtime of every file in a local checkpoint folder."""
    from pathlib import Path

    files = []
    m = spec.get("model")
    if isinstance(m, str) and Path(m).is_dir():
        for f in sorted(Path(m).iterdir()):
            if f.is_file():
                st = f.stat()
                files.append([f.name, st.st_size, st.st_mtime_ns])
    return _store.key(spec=spec, files=files)


def release_backends() -> None:
    """Drop the backend :func:`load_backend` keeps for reuse (and return CUDA memory it held)."""
    if _LAST_BACKEND:
        _LAST_BACKEND.clear()
        import gc

        gc.collect()
        _free_cuda()


from .errors import is_oom  # noqa: E402,F401  (one definition; run.is_oom stays importable)


def _free_cuda() -> None:
    import gc
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # is_available() can take seconds without a GPU
        gc.collect()  # drop tensors held by the exception's frames before returning cached blocks
        torch.cuda.empty_cache()


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def _label_list(labels, manifest: pd.DataFrame) -> list[str]:
    if labels is None:
        if "label_set" not in manifest.columns:
            raise ValueError("manifest has no label_set column: pass labels= (a label-set name or a list)")
        sets = sorted(set(manifest["label_set"].dropna().astype(str).str.lower()))
        if len(sets) != 1:
            raise ValueError(f"manifest mixes label sets {sets}: pass labels=")
        return list(_labels.get(sets[0]))
    if isinstance(labels, str):
        return list(_labels.get(labels))
    return [str(x) for x in labels]


def _check_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a DataFrame (see emoprobe.data), got {type(manifest).__name__}")
    missing = [c for c in ("clip_id", "path") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; has {list(manifest.columns)}")
    dup = manifest["clip_id"][manifest["clip_id"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"manifest has duplicate clip_id(s) {dup[:5]}{' ...' if len(dup) > 5 else ''}")
    return manifest.reset_index(drop=True)


def _sampling_spec(sampling: dict) -> dict:
    from emoprobe import sampling as _sampling

    s = dict(sampling)
    strategy = s.pop("strategy", "fps")
    return _sampling.spec_key(strategy, **s)


def _invalid(row: dict) -> str | None:
    """The reason a manifest row was marked invalid by ``data.from_spec`` (column ``invalid``), else None."""
    r = row.get("invalid")
    return None if r is None or (isinstance(r, float) and np.isnan(r)) or str(r) == "" else str(r)


def _item_hash(row: dict, st: _store.RunStore) -> str:
    if _invalid(row):  # never read: the file may be outside the dataset, a FIFO, ...
        raise ValueError(f"invalid clip: {_invalid(row)}")
    sha = row.get("sha256")
    if isinstance(sha, str) and sha:
        return sha
    return st.content_hash(row["path"])


def _content(row: dict, st: _store.RunStore) -> tuple[str | None, str | None]:
    """``(content hash, None)``, or ``(None, reason)`` when the clip cannot be read (recorded as failed).
    An invalid row (issue 14) gets ``("invalid:<digest of the reason>", "invalid clip: <reason>")``: the reason
    enters the key, so fixing the row gives a new key instead of reusing the stored failure."""
    if _invalid(row):
        return "invalid:" + hashlib.sha256(_invalid(row).encode()).hexdigest()[:16], f"invalid clip: {_invalid(row)}"
    try:
        return _item_hash(row, st), None
    except Exception as e:  # noqa: BLE001
        return None, f"cannot read clip {row['path']}: {_first_line(e)}"


def _open_run(st: _store.RunStore, task: str, display: str, fp: dict, setting: dict, all_ids, run_name,
              shard, n_clips: int) -> tuple[str, str, dict]:
    """Register the run; returns its name, the input-code version and the metadata stored with every answer."""
    run = run_name or _run_name(task, display, fp, setting, all_ids)
    st.start_run(run, {"model": display, "fingerprint": fp, **setting, "shard": shard, "n_clips": n_clips})
    meta = {"task": task, "model": display, "setting": _store.canonical_json(setting)}
    return run, _store.input_code_version(), meta


# How shuffled frames are timed for the model: "as_new_video" = the permuted frames are shown at the sorted
# sampled instants (frame i at the i-th instant), as if the shuffled frames had been saved as a new video (what
# the paper's frame-shuffle test does). Keeping each frame's source instant instead would leak the true order
# to models that read timestamps (Qwen3-VL writes them as text) and change the apparent frame rate.
SHUFFLE_TIMING = "as_new_video"


def _order(row: dict) -> float:
    """A clip's processing-order hint: its duration in seconds when the manifest knows it, else 0."""
    for c in ("duration_s",):
        v = row.get(c)
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v):
            return v
    try:
        return float(row["n_frames"]) / float(row["fps"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def _clip_seed(shuffle_seed: int, clip_id: str) -> int:
    return int(hashlib.sha256(f"{int(shuffle_seed)}:{clip_id}".encode()).hexdigest()[:8], 16)


def _prompt_text(prompt: str, labels: list[str]) -> str:
    return _prompts.render(prompt, labels)


def _json_or_none(obj) -> str | None:
    if obj is None:
        return None
    return obj if isinstance(obj, str) else _store.canonical_json(obj)


def _run_name(task: str, display: str, fp: dict, setting: dict, clip_ids) -> str:
    h = _store.key(fp=fp, setting=setting, clips=sorted(map(str, clip_ids)))[:10]
    return f"{task}:{display}:{h}"


# ------------------------------------------------------------------------------------------------ engine
@dataclass
class _Item:
    key: str
    clip_id: str
    label: str | None
    prepare: Callable[[], tuple[Any, dict]]   # -> (request, info for the row: n_frames, capped, extra)
    error: str | None = None                  # failed before any model call (e.g. unreadable file)
    info: dict = field(default_factory=dict)
    order: float = 0.0                        # processing-order hint (clip duration): similar lengths batch together


class _Engine:
    def __init__(self, backend: Backend, st: _store.RunStore, run: str, meta: dict, batch_size: int,
                 progress: bool, desc: str, retry_failed: bool, labels: list[str] | None, seed: int):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.backend, self.st, self.run, self.meta = backend, st, run, meta
        self.bs = int(batch_size)
        self.progress, self.desc, self.retry_failed = progress, desc, retry_failed
        self.labels = labels
        self.seed = seed

    def _call(self, fn, reqs: list) -> list[Answer]:
        if len(reqs) > self.bs:  # a batch size learned from an earlier OOM applies to the rest as well
            out, i = [], 0
            while i < len(reqs):
                n = self.bs
                out += self._call(fn, reqs[i:i + n])
                i += n
            return out
        try:
            answers = fn(reqs)
        except Exception as e:  # noqa: BLE001 - OOM handled, everything else recorded per item
            if not is_oom(e):
                raise
            _free_cuda()
            if len(reqs) == 1:
                return [Answer.failed(f"out of memory at batch size 1: {_first_line(e)}")]
            half = (len(reqs) + 1) // 2
            if half < self.bs:
                log.warning("%s: out of memory at batch size %d, continuing with %d", self.desc, len(reqs), half)
                self.bs = half
            return self._call(fn, reqs[:half]) + self._call(fn, reqs[half:])
        if not isinstance(answers, list) or len(answers) != len(reqs):
            raise RuntimeError(f"backend returned {len(answers) if isinstance(answers, list) else answers!r} "
                               f"answers for {len(reqs)} requests")
        return answers

    def _row(self, item: _Item, a: Answer, info: dict) -> dict:
        status, error = a.status, a.error
        if status not in ("ok", "unparsed", "failed"):
            status, error = "failed", f"backend returned invalid status {a.status!r}"
        if status == "ok" and self.labels is not None and a.label not in self.labels:
            status, error = "failed", f"backend returned label {a.label!r} outside the label set"
        if status == "failed" and not error:
            error = "backend reported a failure without a reason"
        extra = {**(info.get("extra") or {}), **(a.extra or {})}
        return {
            "key": item.key, "clip_id": item.clip_id, "label": item.label,
            "pred": a.label if status == "ok" else None, "status": status,
            "parse_method": a.parse_method or ("failed" if status == "failed" else ""),
            "raw": a.text, "scores": _json_or_none(a.scores),
            "n_visual_tokens": a.n_visual_tokens, "n_text_tokens": a.n_text_tokens,
            "n_frames": info.get("n_frames"), "capped": info.get("capped"), "error": _store.scrub(error),
            "extra": _json_or_none(extra) if extra else None, **self.meta,
        }

    def _failed(self, item: _Item, reason: str, info: dict | None = None) -> dict:
        return self._row(item, Answer.failed(reason), info or {})

    # ------------------------------------------------------------------ work sharing (issue 14)
    # Several processes on one store split the work: each leases (store.RunStore.shared_batches) rounds of
    # LEASE_ROUND batches no live worker holds, computes them with _execute, and takes the answers the others
    # stored; a worker that dies (kill -9) loses its leases at once on this host (after the TTL elsewhere).
    LEASE_ROUND = 8   # each round restarts the decode pipeline: 8 batches keep that bubble near 4% (issue 11)

    def execute(self, items: list[_Item], call: Callable[[list], list[Answer]]) -> dict[str, dict]:
        stored = self.st.get(it.key for it in items)
        pending = [it.key for it in sorted(items, key=lambda it: it.order)  # similar lengths batch together
                   if it.key not in stored or (stored[it.key]["status"] == "failed" and self.retry_failed)]
        if not pending:
            return self._execute(items, call)
        by_key: dict[str, list[_Item]] = {}
        for it in items:
            by_key.setdefault(it.key, []).append(it)
        wanted = set(pending)
        rows = self._execute([it for it in items if it.key not in wanted], call)  # the cached ones
        for keys in self.st.shared_batches(pending, self.LEASE_ROUND * self.bs):
            rows.update(self._execute([it for k in keys for it in by_key[k]], call))
        others = self.st.get(k for k in pending if k not in rows)  # answered by another worker meanwhile
        self.st.add_to_run(self.run, list(others))
        for it in items:
            if it.key in others and it.key not in rows:
                rows[it.key] = {**others[it.key], "label": it.label, "cached": True}
        return rows

    def _execute(self, items: list[_Item], call: Callable[[list], list[Answer]]) -> dict[str, dict]:
        from tqdm.auto import tqdm

        cached = self.st.get(it.key for it in items)
        rows: dict[str, dict] = {}
        todo: list[_Item] = []
        queued: set[str] = set()
        for it in items:
            c = cached.get(it.key)
            if c is not None and (c["status"] != "failed" or not self.retry_failed):
                rows[it.key] = {**c, "label": it.label, "cached": True}
            elif it.key not in queued:
                queued.add(it.key)
                todo.append(it)
        self.st.add_to_run(self.run, list(rows))
        # Clips of similar length next to each other: the backend batches requests of equal frame count into one
        # forward, so a window of mixed lengths splits into many small forwards (issue 11). Output order is the
        # manifest's whatever the processing order.
        todo.sort(key=lambda it: it.order)
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=self.desc, unit="item",
                   disable=not self.progress, dynamic_ncols=True)
        chunks = [todo[j:j + self.bs] for j in range(0, len(todo), self.bs)]
        # The next chunk is decoded / transformed in one background thread while the model answers the current
        # one (the model process keeps one torch thread: emoprobe.threads); at most two chunks are in memory.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emoprobe-prepare") if len(chunks) > 1 else None
        try:
            nxt = self._submit(pool, chunks[0]) if chunks else None
            for ci, chunk in enumerate(chunks):
                batch_rows, ready = nxt.result() if pool is not None else nxt
                if ci + 1 < len(chunks):
                    nxt = self._submit(pool, chunks[ci + 1])
                if ready:
                    self._seed()
                    try:
                        answers = self._call(call, [r for _, r, _ in ready])
                    except Exception as e:  # noqa: BLE001 - the whole batch failed: record each item
                        answers = [Answer.failed(f"backend error: {_first_line(e)}")] * len(ready)
                    batch_rows += [self._row(it, a, info) for (it, _, info), a in zip(ready, answers)]
                self.st.put(batch_rows, run=self.run)  # persisted the moment the batch returns
                for r in batch_rows:
                    rows[r["key"]] = {**r, "cached": False}
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return rows

    def _submit(self, pool, chunk: list[_Item]):
        return pool.submit(self._prepare, chunk) if pool is not None else self._prepare(chunk)

    def _prepare(self, chunk: list[_Item]) -> tuple[list[dict], list]:
        """Inputs for a chunk: ``(rows of items that failed before any model call, [(item, request, info)])``."""
        failed, ready = [], []
        for it in chunk:
            if it.error:
                failed.append(self._failed(it, it.error))
                continue
            try:
                req, info = it.prepare()
            except Exception as e:  # noqa: BLE001 - recorded as the item's failure
                failed.append(self._failed(it, f"cannot prepare input: {_first_line(e)}"))
                continue
            ready.append((it, req, info))
        return failed, ready

    def _seed(self) -> None:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None:
            torch.manual_seed(int(self.seed))


def _frame(items: list[_Item], rows: dict[str, dict]) -> pd.DataFrame:
    out = []
    for it in items:
        r = rows[it.key]
        out.append({c: r.get(c) for c in COLUMNS})
    df = pd.DataFrame(out, columns=COLUMNS)
    for c in ("n_visual_tokens", "n_text_tokens", "n_frames"):
        df[c] = df[c].astype("Int64")
    df["capped"] = df["capped"].map(lambda v: None if v is None or pd.isna(v) else bool(v)).astype("boolean")
    df["cached"] = df["cached"].astype(bool)
    return df


def _summarise(df: pd.DataFrame, st: _store.RunStore, run: str, what: str) -> pd.DataFrame:
    s = {"n": int(len(df)), "ok": int((df["status"] == "ok").sum()),
         "unparsed": int((df["status"] == "unparsed").sum()), "failed": int((df["status"] == "failed").sum()),
         "cached": int(df["cached"].sum())}
    st.finish_run(run, s)
    log.info("%s [%s]: n=%d ok=%d unparsed=%d failed=%d cached=%d", what, run, s["n"], s["ok"], s["unparsed"],
             s["failed"], s["cached"])
    df.attrs["summary"] = s
    df.attrs["run"] = run
    _log_answers(what, s)
    return df


#: When set (the book runner sets it for each chapter), every classify/describe/msce call appends one JSON line
#: ``{"what", "n", "computed", "from_store"}`` to this file: how many answers a chapter computed vs read.
ANSWER_LOG_ENV = "EMOPROBE_ANSWER_LOG"


def _log_answers(what: str, s: dict) -> None:
    import os

    path = os.environ.get(ANSWER_LOG_ENV)
    if not path:
        return
    line = json.dumps({"what": what, "n": s["n"], "computed": s["n"] - s["cached"], "from_store": s["cached"]})
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:  # accounting only: never fails a run
        log.warning("cannot append to %s=%s: %s", ANSWER_LOG_ENV, path, e)


def _prep_manifest(manifest, shard):
    manifest = _check_manifest(manifest)
    all_ids = manifest["clip_id"].astype(str).tolist()
    if shard is not None:
        manifest = manifest[[_store.in_shard(c, shard) for c in all_ids]].reset_index(drop=True)
    return manifest, all_ids


def _load_gt(row: dict):
    """SynthFER ground truth for transforms that need it (rows with a gt_path or a SynthFER identity)."""
    if "gt_path" in row or "identity" in row:
        from emoprobe import synthfer

        return synthfer.load_gt(row)
    return None


# ------------------------------------------------------------------------------------------------ helper processes
# A long run on a CPU model also uses helper processes (threads.workers() - 1 of them; one torch thread each), so
# both cores answer (issue 11). Each helper runs the same classify call on the same run store; the store's leases
# (RunStore.shared_batches) split the clips between them and the calling process, which ends with every answer.
# Helpers persist for the life of the calling process (a notebook kernel, a CLI run) and keep their last model
# loaded (load_backend), so only the first call pays their start. Python threads cannot share a Qwen-VL model
# (it keeps per-call rope state on the module), hence processes. A helper that fails loses nothing: its leases
# end and the calling process computes those clips itself.
#: Fewest answers still to compute for which a call starts helpers (below it, a helper's start costs more).
PARALLEL_MIN_ITEMS = 96
_HELPERS: dict = {}


def _helper_spec(backend) -> dict | None:
    """A spec from which a helper process loads the same model (same fingerprint), or None when the model is not
    a CPU model that can be loaded again (GPU, remote API, in-memory objects)."""
    spec = getattr(backend, "spec", None)
    if not isinstance(spec, dict) or spec.get("backend") not in ("hf", "vision") or not spec.get("model"):
        return None
    if spec.get("backend") == "hf" and getattr(backend, "path", None) is None:
        return None
    dev = getattr(backend, "device", None)
    if dev is not None and getattr(dev, "type", str(dev)) != "cpu":
        return None
    return {k: v for k, v in spec.items() if k != "name"}


def _helper_init(log_path: str | None = None) -> None:
    import os
    import sys

    os.environ.pop(ANSWER_LOG_ENV, None)       # the calling process accounts for every answer
    os.environ["EMOPROBE_WORKERS"] = "1"        # a helper starts no helpers of its own
    # A helper writes to the caller's terminal or notebook only through the caller: its own output (progress
    # bars, library warnings) goes to a log file, so a chapter's page never shows a helper's stderr. A helper's
    # failure still reaches the caller as the exception of its task.
    os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
    from emoprobe import threads

    threads.configure()


def _helper_classify(spec: dict, records: list[dict], kwargs: dict) -> list[str]:
    """Run in a helper process: the same classify call; returns the keys this helper computed."""
    df = classify(spec, pd.DataFrame(records), progress=False, **kwargs)
    return df.loc[~df["cached"].astype(bool), "key"].tolist()


def _helper_pool(n: int):
    ex = _HELPERS.get("pool")
    if ex is None or _HELPERS.get("n") != n:
        shutdown_helpers()
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ex = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_helper_init, initargs=(_helper_log(),))
        _HELPERS.update(pool=ex, n=n)
    return ex


def _helper_log() -> str | None:
    """Where helper processes write their output: ``paths.cache()/helpers.log`` (None: discarded)."""
    import os

    from emoprobe import paths

    try:
        d = paths.cache()
        d.mkdir(parents=True, exist_ok=True)
        return str(d / "helpers.log")
    except OSError:
        return os.devnull


def shutdown_helpers() -> None:
    """Stop the helper processes (they start again when a long CPU run needs them)."""
    ex = _HELPERS.pop("pool", None)
    _HELPERS.pop("n", None)
    if ex is not None:
        ex.shutdown(wait=True, cancel_futures=True)


def _start_helpers(backend, st: _store.RunStore, items: list, manifest: pd.DataFrame, kwargs: dict,
                   retry_failed: bool) -> list:
    from emoprobe import threads

    n = threads.workers() - 1
    spec = _helper_spec(backend) if n >= 1 else None
    if spec is None or getattr(st, "path", None) is None:
        return []
    stored = st.get(it.key for it in items)
    todo = sum(1 for it in items if it.error is None and (it.key not in stored or (
        retry_failed and stored[it.key]["status"] == "failed")))
    if todo < PARALLEL_MIN_ITEMS:
        return []
    records = manifest.to_dict("records")
    kw = {**kwargs, "store": str(st.path), "retry_failed": retry_failed}
    import sys
    import types

    # A spawned process re-imports the caller's __main__ unless told otherwise: a script without a
    # `if __name__ == "__main__"` guard would run again inside every helper. Helpers need nothing from __main__,
    # so they start (the pool starts them at submit) while __main__ is an empty module.
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        ex = _helper_pool(n)
        return [ex.submit(_helper_classify, spec, records, kw) for _ in range(n)]
    except Exception as e:  # noqa: BLE001 - helpers are an optimisation: the calling process does the work
        log.warning("cannot start helper processes (%s); computing in this process only", _first_line(e))
        shutdown_helpers()
        return []
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _join_helpers(futures: list, rows: dict[str, dict]) -> None:
    """Wait for the helpers of this call; answers they computed count as computed in this call, not cached."""
    for f in futures:
        try:
            keys = f.result()
        except Exception as e:  # noqa: BLE001 - their leases ended; the calling process answered those clips
            log.warning("a helper process failed (%s); its clips were answered by this process", _first_line(e))
            shutdown_helpers()
            continue
        for k in keys:
            if k in rows:
                rows[k]["cached"] = False


# ------------------------------------------------------------------------------------------------ classify
def classify(model, manifest: pd.DataFrame, sampling: dict | None = None, transform: str = "none",
             prompt: str = "paper", seed: int = 0, shuffle_seed: int | None = None, store=None,
             batch_size: int = DEFAULT_BATCH_SIZE, shard: str | None = None, progress: bool = True, score: bool = False,
             labels=None, run_name: str | None = None, retry_failed: bool = False) -> pd.DataFrame:
    """Classify every clip of ``manifest`` (one row per clip, in manifest order; see the module docstring).

    ``model``: a spec dict (``{"backend": ..., "model": ..., "name": display}``), an HF id/path, or a loaded
    backend. ``store``: a RunStore, a path, or None for ``paths.cache()/runs.sqlite``. ``shard="i/n"`` keeps
    the clips of shard i. ``labels``: label-set name or list (default: the manifest's ``label_set``).
    """
    sampling = {"strategy": "fps", "fps": 5} if sampling is None else dict(sampling)
    if transform != "none":
        from emoprobe import transforms as _transforms

        _transforms.parse_name(transform)  # an unknown name or detector fails fast (TransformError, a ValueError)
    manifest, all_ids = _prep_manifest(manifest, shard)
    labs = _label_list(labels, manifest)
    backend, display = load_backend(model)
    st = _store.open_store(store)
    fp = backend.fingerprint()
    samp_key = _sampling_spec(sampling)
    text = _prompt_text(prompt, labs)
    setting = {"task": "classify", "sampling": samp_key, "transform": transform, "prompt": prompt,
               "labels": labs, "seed": seed, "shuffle_seed": shuffle_seed, "score": bool(score)}
    if shuffle_seed is not None:
        setting["shuffle_timing"] = SHUFFLE_TIMING
    run, code, meta = _open_run(st, "classify", display, fp, setting, all_ids, run_name, shard, len(manifest))

    items = []
    for row in manifest.to_dict("records"):
        cid = str(row["clip_id"])
        content, err = _content(row, st)
        k = _store.key(task="classify", model=fp, item={"clip_id": cid, "sha256": content}, sampling=samp_key,
                       transform=transform, prompt=text, labels=labs, seed=seed, shuffle_seed=shuffle_seed,
                       score=bool(score), code=code,
                       **({"shuffle_timing": SHUFFLE_TIMING} if shuffle_seed is not None else {}))

        def prepare(row=row, cid=cid):
            from emoprobe import sampling as _sampling

            s = dict(sampling)
            fr = _sampling.sample(row["path"], s.pop("strategy", "fps"), **s)
            t_source = None
            if shuffle_seed is not None:
                fr = _sampling.shuffle(fr, _clip_seed(shuffle_seed, cid))
                # SHUFFLE_TIMING: the shuffled frames are shown as a new video, frame i at the i-th sampled
                # instant (as the paper did); their source instants are kept in `extra.t_source`
                t_source = np.asarray(fr.t, float)
                fr.t = np.sort(t_source)
            if transform != "none":
                from emoprobe import transforms

                fr = transforms.apply(transform, fr, gt=_load_gt(row))
            info = {"n_frames": len(fr), "capped": bool(fr.capped),
                    "extra": {"t": np.round(np.asarray(fr.t, float), 4).tolist(),
                              **({"t_source": np.round(t_source, 4).tolist()} if t_source is not None else {}),
                              **({"order": np.asarray(fr.order).tolist()} if shuffle_seed is not None else {}),
                              **({"cap_reason": fr.cap_reason} if getattr(fr, "cap_reason", None) else {})}}
            return ClassifyRequest(frames=fr.frames, t=fr.t, labels=labs, prompt=text), info

        items.append(_Item(key=k, clip_id=cid, label=row.get("label"), prepare=prepare, error=err,
                           order=_order(row)))

    eng = _Engine(backend, st, run, meta, batch_size, progress, display, retry_failed, labs, seed)
    helpers = _start_helpers(backend, st, items, manifest, dict(
        sampling=sampling, transform=transform, prompt=prompt, seed=seed, shuffle_seed=shuffle_seed,
        batch_size=batch_size, score=score, labels=labs, run_name=run), retry_failed)
    rows = eng.execute(items, lambda reqs: backend.classify(reqs, score=score))
    _join_helpers(helpers, rows)
    return _summarise(_frame(items, rows), st, run, f"classify {display}")


# ------------------------------------------------------------------------------------------------ describe
def describe(model, manifest: pd.DataFrame, sampling: dict | None = None, prompt: str = "motion", seed: int = 0,
             store=None, batch_size: int = DEFAULT_BATCH_SIZE, shard: str | None = None, progress: bool = True,
             run_name: str | None = None, retry_failed: bool = False) -> pd.DataFrame:
    """Describe each clip (free text in ``raw``; ``prompt`` names ``prompts.DESCRIBE`` or is literal text)."""
    sampling = {"strategy": "fps", "fps": 5} if sampling is None else dict(sampling)
    manifest, all_ids = _prep_manifest(manifest, shard)
    backend, display = load_backend(model)
    st = _store.open_store(store)
    fp = backend.fingerprint()
    samp_key = _sampling_spec(sampling)
    text = _prompts.DESCRIBE.get(prompt, prompt)
    setting = {"task": "describe", "sampling": samp_key, "prompt": prompt, "seed": seed}
    run, code, meta = _open_run(st, "describe", display, fp, setting, all_ids, run_name, shard, len(manifest))
    items = []
    for row in manifest.to_dict("records"):
        cid = str(row["clip_id"])
        content, err = _content(row, st)
        k = _store.key(task="describe", model=fp, item={"clip_id": cid, "sha256": content}, sampling=samp_key,
                       prompt=text, seed=seed, code=code)

        def prepare(row=row):
            from emoprobe import sampling as _sampling

            s = dict(sampling)
            fr = _sampling.sample(row["path"], s.pop("strategy", "fps"), **s)
            return DescribeRequest(frames=fr.frames, t=fr.t, prompt=text), {"n_frames": len(fr),
                                                                            "capped": bool(fr.capped)}

        items.append(_Item(key=k, clip_id=cid, label=row.get("label"), prepare=prepare, error=err,
                           order=_order(row)))
    eng = _Engine(backend, st, run, meta, batch_size, progress, display, retry_failed, None, seed)
    rows = eng.execute(items, backend.describe)
    return _summarise(_frame(items, rows), st, run, f"describe {display}")


# ------------------------------------------------------------------------------------------------ MSCE
def msce(model, manifest: pd.DataFrame, key_fps: float = 1.0, m: int = 4, describe_model=None,
         prompt: str = "msce", describe_prompt: str = "motion", seed: int = 0, store=None, batch_size: int = DEFAULT_BATCH_SIZE,
         shard: str | None = None, progress: bool = True, labels=None, run_name: str | None = None,
         retry_failed: bool = False, score: bool = False, contexts=None) -> pd.DataFrame:
    """Multi-Stage Context Enrichment (paper Sec. 4.2).

    Stage 1: ``describe_model`` (default: ``model``) turns each gap of ``m`` in-between frames
    (``sampling.keyframes_gaps``) into a motion text (stored as ``describe`` rows of their own).
    Stage 2: ``model`` classifies the keyframes with the texts interleaved (``ClassifyRequest.context``).
    The stage-2 key includes the texts, so new descriptions give new answers. A clip whose frames cannot be
    decoded, or any of whose gaps failed in stage 1, is a failed row with the reason.
    Rows as :func:`classify`; ``extra`` holds the motion texts.

    ``contexts`` (mapping clip_id -> list of texts) replaces stage 1 (no describe call): each clip's texts are
    used as given (e.g. oracle texts written from ground truth, or texts permuted across clips as a control).
    A list must hold one text per gap, or be empty (the keyframes in the interleaved layout with no motion
    text); a clip missing from the mapping or with another number of texts is a failed row with the reason.
    The texts enter the stage-2 key, and a digest of the mapping the run's name.
    """
    from emoprobe import sampling as _sampling

    manifest, all_ids = _prep_manifest(manifest, shard)
    labs = _label_list(labels, manifest)
    backend, display = load_backend(model)
    dbackend, ddisplay = (backend, display) if describe_model is None else load_backend(describe_model)
    st = _store.open_store(store)
    fp, dfp = backend.fingerprint(), dbackend.fingerprint()
    samp_key = _sampling.spec_key("keyframes_gaps", key_fps=key_fps, m=m)
    text, dtext = _prompt_text(prompt, labs), _prompts.DESCRIBE.get(describe_prompt, describe_prompt)
    if contexts is not None:
        contexts = {str(c): [str(x) for x in v] for c, v in dict(contexts).items()}
    setting = {"task": "msce", "sampling": samp_key, "prompt": prompt, "describe_prompt": describe_prompt,
               "describe_model": dfp, "labels": labs, "seed": seed, "score": bool(score)}
    if contexts is not None:  # given texts: no stage-1 model; the run name follows the texts
        setting["describe_model"] = None
        setting["contexts"] = _store.key(contexts={c: contexts.get(c) for c in map(str, all_ids)})
    run = run_name or _run_name("msce", display, fp, setting, all_ids)
    st.start_run(run, {"model": display, "describe_model": ddisplay, "fingerprint": fp, **setting, "shard": shard,
                       "n_clips": len(manifest)})
    code = _store.input_code_version()
    meta1 = {"task": "describe", "model": ddisplay,
             "setting": _store.canonical_json({"task": "describe", "sampling": samp_key, "prompt": describe_prompt,
                                               "seed": seed})}
    meta2 = {"task": "classify", "model": display, "setting": _store.canonical_json(setting)}
    eng1 = _Engine(dbackend, st, run, meta1, batch_size, progress=False, desc=f"{ddisplay} stage 1",
                   retry_failed=retry_failed, labels=None, seed=seed)
    eng2 = _Engine(backend, st, run, meta2, batch_size, progress=False, desc=f"{display} stage 2",
                   retry_failed=retry_failed, labels=labs, seed=seed)

    from tqdm.auto import tqdm

    records = manifest.to_dict("records")
    all_items, all_rows = [], {}
    bar = tqdm(total=len(records), desc=f"MSCE {display}", unit="clip", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(records), max(1, int(batch_size))):
        chunk = records[start:start + max(1, int(batch_size))]
        decoded, s1_items = {}, []
        for row in chunk:
            cid = str(row["clip_id"])
            try:
                content = _item_hash(row, st)
                keys, gaps = _sampling.keyframes_gaps(row["path"], key_fps=key_fps, m=m)
                decoded[cid] = (content, keys, gaps, None)
            except Exception as e:  # noqa: BLE001
                decoded[cid] = (None, None, None, f"cannot decode clip {row['path']}: {_first_line(e)}")
                continue
            if contexts is not None:
                continue
            for j, g in enumerate(gaps):
                k = _store.key(task="describe", model=dfp, item={"clip_id": cid, "sha256": content},
                               sampling={**samp_key, "gap": j}, prompt=dtext, seed=seed, code=code)
                s1_items.append(_Item(key=k, clip_id=f"{cid}#gap{j}", label=None, prepare=(
                    lambda g=g: (DescribeRequest(frames=g.frames, t=g.t, prompt=dtext),
                                 {"n_frames": len(g), "capped": bool(g.capped)}))))
        s1 = eng1.execute(s1_items, dbackend.describe) if s1_items else {}
        s2_items = []
        for row in chunk:
            cid = str(row["clip_id"])
            content, keys, gaps, err = decoded[cid]
            texts = []
            if err is None and contexts is not None:
                given = contexts.get(cid)
                if given is None:
                    err = f"no context given for clip {cid}"
                elif len(given) not in (0, len(gaps)):
                    err = f"{len(given)} context texts given for clip {cid}, which has {len(gaps)} gaps"
                else:
                    texts = list(given)
            elif err is None:
                for j in range(len(gaps)):
                    r = s1[[it.key for it in s1_items if it.clip_id == f"{cid}#gap{j}"][0]]
                    if r["status"] == "failed":
                        err = f"stage 1 failed for gap {j}: {r['error']}"
                        break
                    texts.append(r["raw"])
            k = _store.key(task="msce", model=fp, item={"clip_id": cid, "sha256": content}, sampling=samp_key,
                           prompt=text, labels=labs, seed=seed, score=bool(score), code=code,
                           context=texts if err is None else None, error=err)
            s2_items.append(_Item(key=k, clip_id=cid, label=row.get("label"), error=err, prepare=(
                lambda keys=keys, texts=texts: (
                    ClassifyRequest(frames=keys.frames, t=keys.t, labels=labs, prompt=text, context=texts),
                    {"n_frames": len(keys), "capped": bool(keys.capped), "extra": {"context": texts}}))))
        all_rows.update(eng2.execute(s2_items, lambda reqs: backend.classify(reqs, score=score)))
        all_items += s2_items
        bar.update(len(chunk))
    bar.close()
    return _summarise(_frame(all_items, all_rows), st, run, f"msce {display}")
