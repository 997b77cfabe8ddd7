"""Crash-safe run store: one SQLite row per model answer, keyed by everything that changes the answer.

Design
------
* **Key.** ``key(**parts)`` is the sha256 of the canonical JSON (sorted keys, no whitespace, numpy scalars and
  tuples normalised) of the parts that change an answer: model fingerprint (weights hash / revision and
  settings), dataset item id + content hash, sampling spec, transform, prompt *text*, seed, and
  :func:`input_code_version` (a hash of the source of the modules that produce the model input). Editing any
  of them gives new keys, so stale answers are never reused.
* **Secrets.** Fields whose *name* looks like a secret (``api_key``, ``token``, ``password``, ...) and any string
  equal to the value of a secret-looking environment variable (``*_API_KEY``, ``*TOKEN*``, ...) are replaced by
  ``"<redacted>"`` before anything is hashed or written (:func:`redact`, :func:`scrub`). API keys therefore never
  enter keys, rows, run arguments or exported files.
* **Durability.** WAL journal with ``synchronous=FULL``: each commit is fsynced, so an answer that was committed
  survives a SIGKILL *and* a power loss. (``NORMAL`` in WAL mode survives process crashes but may lose the last
  commits on power loss.) We commit once per batch, and a batch costs seconds of model time, so the extra fsync
  is negligible.
* **Upsert.** ``put`` inserts or updates by key, never duplicating. A failed answer never overwrites a
  successful (ok/unparsed) one; a later success replaces a failure. ``attempts`` counts writes.
* **Failures.** Failed answers are stored with ``status="failed"`` and their reason. ``run.classify`` reuses a
  stored failure as is (reported as cached) unless called with ``retry_failed=True``: a rerun of the same
  command is then cheap and reproducible, and deterministic failures (an undecodable file) are not retried
  forever; transient ones (a server outage) are retried on request.
* **Runs.** A ``runs`` table holds run metadata (name, started, args JSON, emoprobe version, git commit) and
  ``run_items`` the keys each run used (cached or new), so ``to_frame(run)`` returns exactly a run's answers.
* **Sharding / merging.** ``in_shard(clip_id, "i/n")`` partitions items by a stable hash of the clip id; the
  stores written by several machines merge with ``RunStore(out).merge(paths)`` without duplicates.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from importlib import util as _import_util
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

# Modules whose source produces the model *input*: editing them invalidates stored answers.
INPUT_MODULES = ("emoprobe.sampling", "emoprobe.transforms", "emoprobe.synthfer", "emoprobe.prompts")

ANSWER_COLUMNS = (
    "key", "task", "clip_id", "label", "pred", "status", "parse_method", "raw", "scores",
    "n_visual_tokens", "n_text_tokens", "n_frames", "capped", "error", "model", "setting", "extra",
    "created", "updated", "attempts",
)
_TEXT_COLUMNS = ("clip_id", "label", "pred", "status", "parse_method", "raw", "scores", "error", "model",
                 "setting", "extra", "task")

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"(^|_)(api_?key|apikey|token|secret|password|passwd|authorization|auth|bearer)$",
                          re.IGNORECASE)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)


class StoreError(RuntimeError):
    """The run store could not be opened, read or merged (the message names the file and the reason)."""


# Names of environment variables that hold a key whatever they are called (``api_key_env: MY_CRED``):
# registered by the backends that read them (remote.OpenAIBackend), redacted like *_KEY / *TOKEN* variables.
_SECRET_ENV_NAMES: set[str] = set()
# An Authorization header (or a bare bearer token) echoed back in a server's error body or a log line.
# (a bare "bearer <word>" only when the word looks like a token: 12+ characters with a digit, "-" or "_", so that
# "the bearer ofgoodnews" in a model's answer is left alone)
_AUTH_VALUE = re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)([A-Za-z0-9._~+/=\-]{6,})"
                         r"|(\bbearer\s+)(?=[A-Za-z0-9._~+/=]*[\d_\-])([A-Za-z0-9._~+/=\-]{12,})")


def register_secret_env(name: str | None) -> None:
    """Treat the value of environment variable ``name`` as a secret from now on (in this process and in the
    child processes it starts: the names travel in ``EMOPROBE_SECRET_ENVS``)."""
    if name:
        _SECRET_ENV_NAMES.add(str(name))
        known = set(filter(None, os.environ.get("EMOPROBE_SECRET_ENVS", "").split(",")))
        if str(name) not in known:
            os.environ["EMOPROBE_SECRET_ENVS"] = ",".join(sorted(known | {str(name)}))


_ENV_MEMO: dict = {}


def _env_secrets() -> list[str]:
    """Values of environment variables whose name looks like a secret or was registered
    (:func:`register_secret_env`, ``EMOPROBE_SECRET_ENVS``), at least 6 characters long.

    Memoised on a snapshot of the environment (a C-level dict copy and comparison, ~1 us): the regex scan over
    every variable ran for each string of each run-store key and row, ~12 ms per clip (issue 11)."""
    env = getattr(os.environ, "_data", None)
    snap = (dict(env) if isinstance(env, dict) else dict(os.environ), frozenset(_SECRET_ENV_NAMES))
    if _ENV_MEMO.get("snap") == snap:
        return _ENV_MEMO["vals"]
    vals = _env_secrets_scan()
    _ENV_MEMO.update(snap=snap, vals=vals)
    return vals


def _env_secrets_scan() -> list[str]:
    named = _SECRET_ENV_NAMES | set(filter(None, os.environ.get("EMOPROBE_SECRET_ENVS", "").split(",")))
    vals = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= 8}
    vals |= {os.environ[k] for k in named if len(os.environ.get(k) or "") >= 6}
    return sorted(vals, key=len, reverse=True)


def scrub(text: str | None) -> str | None:
    """Replace any secret environment value and any Authorization / bearer value in ``text`` by
    ``<redacted>``."""
    if not text or not isinstance(text, str):
        return text
    for s in _env_secrets():
        if s in text:
            text = text.replace(s, REDACTED)
    if "uthorization" in text or "earer" in text.lower():
        text = _AUTH_VALUE.sub(lambda m: (m.group(1) or m.group(3)) + REDACTED, text)
    return text


def install_log_scrubber() -> None:
    """Scrub secrets from every log record of this process, whichever logger writes it (the record factory is
    wrapped once; idempotent)."""
    import logging

    old = logging.getLogRecordFactory()
    if getattr(old, "_emoprobe_scrub", False):
        return

    def factory(*args, **kwargs):
        record = old(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's own business
            return record
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return record

    factory._emoprobe_scrub = True
    logging.setLogRecordFactory(factory)


def redact(obj: Any) -> Any:
    """Deep copy of ``obj`` with secret-named fields and secret environment values redacted."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and _SECRET_NAME.search(k) and v not in (None, ""):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return scrub(obj)
    return obj


# --------------------------------------------------------------------------------------------- keys
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"run-store key part of type {type(obj).__name__} is not JSON-able: {obj!r}")


def canonical_json(obj: Any) -> str:
    return json.dumps(_jsonable(redact(obj)), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def key(**parts: Any) -> str:
    """Stable sha256 hex digest of the canonical JSON of ``parts`` (secrets redacted first)."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


@lru_cache(maxsize=None)
def input_code_version(modules: tuple[str, ...] = INPUT_MODULES) -> str:
    """Hash of the code of the modules that produce the model input (missing modules count as absent).

    The source is read, not imported, so computing the version costs no heavy imports. What is hashed is the
    syntax tree without docstrings, comments, line numbers or layout: re-wording a docstring or re-wrapping code
    keeps every stored answer, a change to what the code does (or a new function) invalidates them. Plotting and
    other helpers that do not change pixels live outside these modules (e.g. ``emoprobe.synthfer_plots``).
    """
    import ast

    h = hashlib.sha256()
    for name in modules:
        spec = _import_util.find_spec(name)
        h.update(name.encode() + b"\0")
        if spec is None or not spec.origin or not os.path.exists(spec.origin):
            h.update(b"<absent>")
        else:
            src = Path(spec.origin).read_bytes()
            try:
                tree = ast.parse(src)
            except SyntaxError:
                h.update(src)
            else:
                for node in ast.walk(tree):
                    body = getattr(node, "body", None)
                    if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                            and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                            and isinstance(body[0].value.value, str)):
                        node.body = body[1:] or [ast.Pass()]
                h.update(ast.dump(tree).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a frame folder (relative names and bytes of its files, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        if not files:
            raise StoreError(f"{p}: frame folder is empty")
        for f in files:
            h.update(str(f.relative_to(p)).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    elif p.is_file():
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        raise StoreError(f"{p}: no such file or folder")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- shards
def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` -> ``None``."""
    if shard is None:
        return None
    if isinstance(shard, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not m:
            raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {shard!r}")
        i, n = int(m.group(1)), int(m.group(2))
    else:
        i, n = (int(x) for x in shard)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n and n >= 1")
    return i, n


def shard_of(clip_id: str, n: int) -> int:
    """Stable shard index of ``clip_id`` among ``n`` shards (sha256, independent of Python's hash seed)."""
    return int(hashlib.sha256(str(clip_id).encode("utf-8")).hexdigest()[:16], 16) % n


def in_shard(clip_id: str, shard: str | tuple[int, int] | None) -> bool:
    s = parse_shard(shard)
    return True if s is None else shard_of(clip_id, s[1]) == s[0]


# --------------------------------------------------------------------------------------------- store
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The checkout's HEAD commit (with ``+dirty`` if it has local changes), or None outside git."""
    try:
        from emoprobe import paths

        root = paths.root()
    except Exception:
        root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


_DDL = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    task TEXT, clip_id TEXT, label TEXT, pred TEXT, status TEXT NOT NULL, parse_method TEXT, raw TEXT,
    scores TEXT, n_visual_tokens INTEGER, n_text_tokens INTEGER, n_frames INTEGER, capped INTEGER,
    error TEXT, model TEXT, setting TEXT, extra TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS answers_clip ON answers(clip_id);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY, started TEXT NOT NULL, updated TEXT NOT NULL, args TEXT,
    emoprobe_version TEXT, git_commit TEXT, host TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS run_items (
    run TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (run, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS content_hashes (sig TEXT PRIMARY KEY, sha256 TEXT);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT, pid INTEGER, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_owner ON leases(owner);
"""

# Leases (work sharing between processes on one store): a worker claims the keys it is about to compute;
# a lease ends when released, when its TTL passes without a heartbeat, or at once when its holder process
# (on this host) no longer exists (kill -9): then another worker picks the key up.
LEASE_TTL_S = 120.0


def owner_id() -> str:
    """A lease owner name unique to this process and call: ``host:pid:random``."""
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    # a zombie (killed, not yet reaped by its parent) is dead for our purpose
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _explain(e: BaseException) -> str:
    msg = str(e)
    low = msg.lower()
    if "disk is full" in low or "disk full" in low or getattr(e, "errno", None) == 28:
        return (f"disk full ({msg}): free space and rerun the same command; answers committed so far are kept "
                "and the rest is computed")
    if "malformed" in low or "not a database" in low or "file is encrypted" in low or "corrupt" in low:
        return (f"the store file is corrupt ({msg}): restore it from a backup, or move it away and rerun "
                "(answers are then recomputed); `sqlite3 FILE .recover` may salvage rows")
    if "locked" in low or "busy" in low:
        return f"the store is locked by another process for too long ({msg})"
    if "readonly" in low or "read-only" in low or "permission" in low:
        return f"the store cannot be written ({msg}): check the file's and its folder's permissions"
    return f"{type(e).__name__}: {msg}"


def _guarded(fn, op: str):
    import functools

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except StoreError:
            raise
        except (sqlite3.Error, pd.errors.DatabaseError, OSError) as e:
            raise StoreError(f"{self.path}: {op}: {_explain(e)}") from e

    return wrapper

# A failed answer never replaces an ok/unparsed one; anything else replaces what was there.
_UPSERT = f"""
INSERT INTO answers ({", ".join(ANSWER_COLUMNS)})
VALUES ({", ".join(":" + c for c in ANSWER_COLUMNS)})
ON CONFLICT(key) DO UPDATE SET
    {", ".join(f"{c}=excluded.{c}" for c in ANSWER_COLUMNS if c not in ("key", "created", "attempts"))},
    attempts = answers.attempts + excluded.attempts
WHERE excluded.status != 'failed' OR answers.status = 'failed'
"""


class RunStore:
    """SQLite run store (WAL, synchronous=FULL). Safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False,
                                        isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            with self._tx():
                for stmt in _DDL.strip().split(";"):
                    if stmt.strip():
                        self._con.execute(stmt)
                self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (str(SCHEMA_VERSION),))
            v = self._con.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: cannot open run store: {e}") from e
        if int(v) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: run-store schema version {v}, this emoprobe expects {SCHEMA_VERSION}")
        self._lock = threading.RLock()

    # -------------------------------------------------------------- plumbing
    @contextmanager
    def _tx(self):
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
            self._con.execute("COMMIT")  # a failed COMMIT (disk full) rolls back below, leaving no open tx
        except BaseException:
            try:
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
            raise

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    # -------------------------------------------------------------- answers
    def get(self, keys: Iterable[str]) -> dict[str, dict]:
        """Stored rows for those of ``keys`` that are present: ``{key: row dict}``."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                cur = self._con.execute(
                    f"SELECT {', '.join(ANSWER_COLUMNS)} FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk)
                for r in cur.fetchall():
                    out[r[0]] = dict(zip(ANSWER_COLUMNS, r))
        return out

    def put(self, rows: Iterable[dict], run: str | None = None) -> int:
        """Upsert ``rows`` (dicts with at least ``key`` and ``status``) in one transaction; returns the count.

        ``run`` additionally records the keys as items of that run. Text fields are scrubbed of secrets.
        """
        now = _now()
        recs = []
        for r in rows:
            if not r.get("key") or r.get("status") not in ("ok", "unparsed", "failed"):
                raise StoreError(f"{self.path}: a row needs a key and status ok|unparsed|failed, got "
                                 f"key={r.get('key')!r} status={r.get('status')!r}")
            rec = {c: r.get(c) for c in ANSWER_COLUMNS}
            for c in ("scores", "setting", "extra"):
                if rec[c] is not None and not isinstance(rec[c], str):
                    rec[c] = canonical_json(rec[c])
            for c in _TEXT_COLUMNS:
                if isinstance(rec[c], str):
                    rec[c] = scrub(rec[c])
            for c in ("n_visual_tokens", "n_text_tokens", "n_frames"):
                rec[c] = None if rec[c] is None or pd.isna(rec[c]) else int(rec[c])
            rec["capped"] = None if rec["capped"] is None or pd.isna(rec["capped"]) else int(bool(rec["capped"]))
            rec["created"] = rec["updated"] = now
            rec["attempts"] = 1
            recs.append(rec)
        with self._lock, self._tx() as con:
            con.executemany(_UPSERT, recs)
            if run is not None:
                con.executemany("INSERT OR IGNORE INTO run_items VALUES (?, ?)", [(run, r["key"]) for r in recs])
        return len(recs)

    def add_to_run(self, run: str, keys: Iterable[str]) -> None:
        """Record ``keys`` (e.g. cached answers) as items of ``run``."""
        with self._lock, self._tx() as con:
            con.executemany("INSERT OR IGNORE INTO run_items VALUES (?, ?)", [(run, k) for k in keys])

    # -------------------------------------------------------------- runs
    def start_run(self, name: str, args: dict | None = None) -> str:
        """Create (or touch) the run ``name`` with its arguments (secrets redacted) and provenance."""
        from emoprobe import __version__

        now = _now()
        with self._lock, self._tx() as con:
            con.execute(
                "INSERT INTO runs (name, started, updated, args, emoprobe_version, git_commit, host) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET updated=excluded.updated, "
                "args=excluded.args, emoprobe_version=excluded.emoprobe_version, git_commit=excluded.git_commit, "
                "host=excluded.host",
                (name, now, now, canonical_json(args or {}), __version__, git_commit(), socket.gethostname()))
        return name

    def finish_run(self, name: str, summary: dict | None = None) -> dict:
        """Store the run's summary, COUNTED FROM THE STORE (:meth:`run_summary`: every answer of the run, whichever
        process or shard wrote it), plus ``cached`` from ``summary`` (this call's). Returns what was stored."""
        with self._lock, self._tx() as con:
            counted = self._count_run(con, name)
            if summary and "cached" in summary:
                counted["cached_last_call"] = int(summary["cached"])
            con.execute("UPDATE runs SET updated=?, summary=? WHERE name=?", (_now(), canonical_json(counted), name))
        return counted

    @staticmethod
    def _count_run(con, name: str) -> dict:
        rows = con.execute(
            "SELECT a.task, a.status, (a.error LIKE '%invalid clip:%') AS inv, COUNT(*) FROM answers a "
            "JOIN run_items r ON r.key = a.key WHERE r.run = ? GROUP BY 1, 2, 3", (name,)).fetchall()
        if any(t != "describe" for t, *_ in rows):  # MSCE runs hold their stage-1 descriptions too
            rows = [r for r in rows if r[0] != "describe"]
        out = {"n": 0, "ok": 0, "unparsed": 0, "failed": 0, "invalid": 0}
        for _task, status, inv, n in rows:
            out["n"] += n
            out[status] = out.get(status, 0) + n
            out["invalid"] += n if inv else 0
        return out

    def run_summary(self, name: str) -> dict:
        """``{n, ok, unparsed, failed, invalid}`` of run ``name`` counted from the store's answers (describe rows
        of an MSCE run not counted); ``invalid`` = failed rows of invalid input clips (``error`` starting with
        "invalid clip:")."""
        with self._lock:
            return self._count_run(self._con, name)

    # -------------------------------------------------------------- leases
    def claim(self, keys: Iterable[str], owner: str, ttl_s: float = LEASE_TTL_S, limit: int | None = None) -> list[str]:
        """Lease those of ``keys`` that no live worker holds (at most ``limit``), in order; returns them.

        Expired leases, and leases of a holder process on this host that no longer exists, are taken over."""
        keys = list(dict.fromkeys(keys))
        now = _dt.datetime.now(_dt.timezone.utc).timestamp()
        host, pid = socket.gethostname(), os.getpid()
        got: list[str] = []
        with self._lock, self._tx() as con:
            held = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                held.update({r[0]: r[1:] for r in con.execute(
                    f"SELECT key, owner, host, pid, expires FROM leases WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk)})
            alive: dict[int, bool] = {}
            for k in keys:
                if limit is not None and len(got) >= limit:
                    break
                h = held.get(k)
                if h is not None and h[0] != owner:
                    o_owner, o_host, o_pid, o_exp = h
                    stale = o_exp < now
                    if not stale and o_host == host and o_pid is not None:
                        if o_pid not in alive:
                            alive[o_pid] = _pid_alive(o_pid)
                        stale = not alive[o_pid]
                    if not stale:
                        continue
                con.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)", (k, owner, host, pid, now + ttl_s))
                got.append(k)
        return got

    def release(self, keys: Iterable[str] | None, owner: str) -> None:
        """End ``owner``'s leases on ``keys`` (all of its leases if ``keys`` is None)."""
        with self._lock, self._tx() as con:
            if keys is None:
                con.execute("DELETE FROM leases WHERE owner=?", (owner,))
            else:
                con.executemany("DELETE FROM leases WHERE key=? AND owner=?", [(k, owner) for k in keys])

    def purge_leases(self) -> int:
        """Delete expired leases and those of holder processes on this host that no longer exist; returns how
        many (their keys were answered or are taken over by :meth:`claim` anyway: this only tidies up)."""
        now = _dt.datetime.now(_dt.timezone.utc).timestamp()
        host = socket.gethostname()
        with self._lock, self._tx() as con:
            owners = con.execute("SELECT owner, host, pid, MAX(expires) FROM leases GROUP BY owner, host, pid").fetchall()
            stale = [o for o, h, pid, exp in owners
                     if exp < now or (h == host and pid is not None and not _pid_alive(pid))]
            n = 0
            for o in stale:
                n += con.execute("DELETE FROM leases WHERE owner=?", (o,)).rowcount
        return n

    def renew(self, owner: str, ttl_s: float = LEASE_TTL_S) -> None:
        """Heartbeat: push the expiry of all of ``owner``'s leases ``ttl_s`` into the future."""
        now = _dt.datetime.now(_dt.timezone.utc).timestamp()
        with self._lock, self._tx() as con:
            con.execute("UPDATE leases SET expires=? WHERE owner=?", (now + ttl_s, owner))

    def shared_batches(self, keys: Iterable[str], batch: int, owner: str | None = None,
                       ttl_s: float = LEASE_TTL_S, poll_s: float = 0.2):
        """Work sharing for one engine: yields lists of at most ``batch`` keys this process has leased and must
        compute now (the caller stores their answers before asking for the next batch; the leases end then).
        Keys another live worker holds are waited for and skipped once that worker has stored their answer (a row
        that changed since this call started); a dead worker's keys are taken over. A heartbeat thread renews
        this owner's leases every ``ttl_s / 3`` s; every lease is released when the generator ends or fails."""
        owner = owner or owner_id()
        pending = list(dict.fromkeys(keys))
        sig = lambda r: (r["status"], r["attempts"], r["updated"])  # noqa: E731
        start = {k: sig(r) for k, r in self.get(pending).items()}
        stop = threading.Event()

        def beat():
            while not stop.wait(max(0.05, ttl_s / 3)):
                try:
                    self.renew(owner, ttl_s)
                except StoreError:
                    pass  # the next claim reports the store's trouble
        hb = threading.Thread(target=beat, name="emoprobe-lease-heartbeat", daemon=True)
        hb.start()
        try:
            while pending:
                now_rows = self.get(pending)
                pending = [k for k in pending if k not in now_rows or sig(now_rows[k]) == start.get(k)]
                if not pending:
                    break
                got = self.claim(pending, owner, ttl_s, limit=max(1, int(batch)))
                if not got:
                    time.sleep(poll_s)  # every remaining key is being computed by a live worker
                    continue
                yield got
                self.release(got, owner)
                done = set(got)
                pending = [k for k in pending if k not in done]
        finally:
            stop.set()
            try:
                self.release(None, owner)
                self.purge_leases()
            except StoreError:
                pass

    def runs(self) -> pd.DataFrame:  # noqa: D102
        return pd.read_sql_query("SELECT * FROM runs ORDER BY started, name", self._con)

    # -------------------------------------------------------------- export
    def to_frame(self, run: str | None = None) -> pd.DataFrame:
        """All answers (or those of ``run``) as a DataFrame, ordered by clip id and key."""
        cols = ", ".join("a." + c for c in ANSWER_COLUMNS)
        with self._lock:
            if run is None:
                df = pd.read_sql_query(f"SELECT {cols} FROM answers a ORDER BY a.clip_id, a.key", self._con)
            else:
                if self._con.execute("SELECT 1 FROM runs WHERE name=?", (run,)).fetchone() is None and \
                        self._con.execute("SELECT 1 FROM run_items WHERE run=?", (run,)).fetchone() is None:
                    known = [r[0] for r in self._con.execute("SELECT name FROM runs ORDER BY name")]
                    raise StoreError(f"{self.path}: no run named {run!r}; runs: {known}")
                df = pd.read_sql_query(
                    f"SELECT {cols} FROM answers a JOIN run_items r ON r.key = a.key WHERE r.run = ? "
                    "ORDER BY a.clip_id, a.key", self._con, params=(run,))
        df["capped"] = df["capped"].map(lambda v: None if v is None or pd.isna(v) else bool(v))
        return df

    def to_parquet(self, path: str | os.PathLike, run: str | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame(run).to_parquet(path, index=False)
        return path

    # -------------------------------------------------------------- merge
    def merge(self, other_paths: Iterable[str | os.PathLike]) -> dict:
        """Merge other stores into this one, without duplicates. Returns counts.

        Per key the better answer wins: ok/unparsed over failed; between two non-failed answers the one
        already here is kept (same key = same input, so they should agree; disagreements are counted as
        ``conflicts``). Runs and run items are unioned.
        """
        stats = {"stores": 0, "rows_seen": 0, "inserted": 0, "replaced": 0, "kept": 0, "conflicts": 0}
        for other in other_paths:
            other = Path(other)
            if not other.is_file():
                raise StoreError(f"{other}: no such run store")
            if other.resolve() == self.path.resolve():
                raise StoreError(f"{other}: cannot merge a store into itself")
            src = RunStore(other)  # validates the schema, checkpoints nothing
            try:
                incoming = pd.read_sql_query(f"SELECT {', '.join(ANSWER_COLUMNS)} FROM answers", src._con)
                runs = src._con.execute("SELECT * FROM runs").fetchall()
                items = src._con.execute("SELECT run, key FROM run_items").fetchall()
            finally:
                src.close()
            here = self.get(incoming["key"].tolist())
            recs = []
            for rec in incoming.to_dict("records"):
                rec = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
                old = here.get(rec["key"])
                stats["rows_seen"] += 1
                if old is None:
                    stats["inserted"] += 1
                    recs.append(rec)
                elif old["status"] == "failed" and rec["status"] != "failed":
                    stats["replaced"] += 1
                    recs.append(rec)
                else:
                    stats["kept"] += 1
                    if old["status"] != "failed" and rec["status"] != "failed" and \
                            (old["pred"], old["raw"]) != (rec["pred"], rec["raw"]):
                        stats["conflicts"] += 1
            with self._lock, self._tx() as con:
                con.executemany(
                    f"INSERT OR REPLACE INTO answers ({', '.join(ANSWER_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(ANSWER_COLUMNS))})",
                    [tuple(r[c] for c in ANSWER_COLUMNS) for r in recs])
                for r in runs:
                    con.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", r)
                con.executemany("INSERT OR IGNORE INTO run_items VALUES (?, ?)", items)
                for name in {r[0] for r in runs} | {r for r, _ in items}:  # summaries count the merged store
                    if con.execute("SELECT 1 FROM runs WHERE name=?", (name,)).fetchone():
                        con.execute("UPDATE runs SET summary=? WHERE name=?",
                                    (canonical_json(self._count_run(con, name)), name))
            stats["stores"] += 1
        return stats

    # -------------------------------------------------------------- content hashes
    def content_hash(self, path: str | os.PathLike) -> str:
        """:func:`file_hash` of ``path``, memoised in the store by (path, size, mtime)."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError as e:
            raise StoreError(f"{p}: cannot read: {e.strerror or e}") from e
        sig = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        with self._lock:
            row = self._con.execute("SELECT sha256 FROM content_hashes WHERE sig=?", (sig,)).fetchone()
        if row and not p.is_dir():  # a folder's mtime misses in-place edits of its files: always re-hash
            return row[0]
        h = file_hash(p)
        with self._lock, self._tx() as con:
            con.execute("INSERT OR REPLACE INTO content_hashes VALUES (?, ?)", (sig, h))
        return h


_GUARDED = {"__len__": "count answers", "get": "read answers", "put": "write answers", "add_to_run": "record run items",
            "start_run": "start a run", "finish_run": "finish a run", "run_summary": "count a run", "runs": "list runs",
            "to_frame": "read answers", "to_parquet": "export", "merge": "merge", "content_hash": "record a content hash",
            "claim": "claim work", "release": "release work", "renew": "renew leases", "purge_leases": "purge leases"}
for _name, _op in _GUARDED.items():  # every sqlite/pandas/OS error names the store file and a way out
    setattr(RunStore, _name, _guarded(getattr(RunStore, _name), _op))
del _name, _op


def answer_count(path: str | os.PathLike) -> int:
    """Answers stored in the run store at ``path``, read-only and without waiting on writers' locks for long;
    0 when the file is missing or unreadable (progress polling by tests and scripts/reliability.py)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def default_path() -> Path:
    from emoprobe import paths

    return paths.cache() / "runs.sqlite"


def open_store(store: "RunStore | str | os.PathLike | None") -> RunStore:
    """``None`` -> the default store ``paths.cache()/runs.sqlite``; a path -> that store; a store -> itself."""
    if isinstance(store, RunStore):
        return store
    return RunStore(default_path() if store is None else store)

