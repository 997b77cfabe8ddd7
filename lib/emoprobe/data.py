"""Datasets as manifests: one DataFrame per dataset with at least ``clip_id, path, label, split, label_set``.

``path`` is a video file or a frame folder (read by :mod:`emoprobe.sampling`). Labels are canonical names from
:mod:`emoprobe.labels`, never indices.

Loaders (``load_dfew``, ``load_mafw``, ``load_manifest``; ``load(name, ...)`` dispatches) raise
:class:`DataError` naming the file and line for a malformed split file. Row-level problems (clip not found,
unknown label, duplicate clip_id) are found by :func:`validate`: with ``strict=True`` (default) a loader raises
a DataError that counts them and names the first few; with ``strict=False`` it returns ``(ok_df, failed_df)``
where ``failed_df`` has the rows' columns plus ``reason`` — nothing is silently dropped.

Clip ids that are all digits are zero-padded to 5 digits (``25`` and ``00025`` are the same clip), the
convention of DFEW's frame folders and MAFW's file names.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat as _stat
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as _labels

log = logging.getLogger(__name__)


from .errors import DataError  # noqa: E402,F401  (defined in errors so sampling need not import data)


MANIFEST_COLUMNS = ("clip_id", "path", "label", "split", "label_set")
FAILED_COLUMNS = ("clip_id", "path", "reason")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
from .sampling import IMAGE_SUFFIXES  # noqa: E402  (frame-folder images: one definition, in sampling)

# DFEW: where clips are looked for, in the order "auto" tries them.
DFEW_CLIP_SOURCES = {
    "video": "Clip/original",  # <id>.mp4 / .avi; any video named <id> anywhere under Clip/ is also accepted
    "jpg_256": "Clip/jpg_256",  # <id>/ frame folders
    "clip_224x224": "Clip/clip_224x224",  # <id>/ frame folders
}
# MAFW: folders searched (non-recursively) for <id>.<video suffix> and for <id>/ frame folders, in this order.
MAFW_VIDEO_DIRS = ("data/clips", "clips", "data/videos", "videos", "data/video", "video", "data")
MAFW_FRAME_DIRS = ("data/frames", "frames", "data/faces", "faces", "data/jpg", "jpg")


def norm_id(x) -> str:
    """Canonical clip id: file stem, all-digit ids zero-padded to 5 digits."""
    s = str(x).strip()
    stem = Path(s).stem if Path(s).suffix.lower() in VIDEO_SUFFIXES else s
    if re.fullmatch(r"\d+", stem):
        return f"{int(stem):05d}"
    return stem


def pad_id(x) -> str:
    """``norm_id`` without stripping folders or suffixes: an all-digit id is zero-padded to 5 digits."""
    s = str(x).strip()
    return f"{int(s):05d}" if re.fullmatch(r"\d+", s) else s


def _frame_folder_ok(p: Path) -> bool:
    return p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())


def escapes(name: str) -> bool:
    """True if a clip name from a split file is not a plain name inside its folder (a path separator, ``..``,
    an absolute path): such names could make the loader read files outside the dataset root."""
    s = str(name).strip()
    return s in (".", "..") or "/" in s or "\\" in s or s.startswith("~") or Path(s).is_absolute() \
        or "\x00" in s


def _inside(path, folder) -> bool:
    """Lexically (``..`` collapsed, symlinks NOT followed, so a dataset whose folders are links still works)."""
    a, b = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _path_problem(p: Path) -> str | None:
    """Why ``p`` cannot be a clip (None if it can): missing, dangling or looping symlink, FIFO, device file,
    socket, empty file, empty frame folder, unreadable."""
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symlink loop: {p}"
        if os.path.islink(p):
            return f"broken symlink (target {os.readlink(p)!r} does not exist): {p}"
        if e.errno == errno.ENOENT:
            return f"missing file: {p}"
        if e.errno == errno.ENOTDIR:
            return f"missing file (a parent is not a folder): {p}"
        if e.errno == errno.EACCES:
            return f"permission denied: {p}"
        return f"cannot stat ({e.strerror}): {p}"
    mode = st.st_mode
    if _stat.S_ISFIFO(mode):
        return f"not a regular file (a FIFO / named pipe): {p}"
    if _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode):
        return f"not a regular file (a device file): {p}"
    if _stat.S_ISSOCK(mode):
        return f"not a regular file (a socket): {p}"
    if _stat.S_ISDIR(mode):
        try:
            return None if _frame_folder_ok(p) else f"empty frame folder: {p}"
        except OSError as e:
            return f"unreadable frame folder ({e.strerror}): {p}"
    if not _stat.S_ISREG(mode):
        return f"not a regular file: {p}"
    if st.st_size == 0:
        return f"empty file (0 bytes): {p}"
    if not os.access(p, os.R_OK):
        return f"permission denied: {p}"
    return None


# ----------------------------------------------------------------------------------------------------------
# Validation and probing
# ----------------------------------------------------------------------------------------------------------
def probe(path, folder_fps: float = 25.0) -> dict:
    """Open a video file or frame folder and decode its first and last frames.

    Returns ``{"n_frames", "fps", "duration_s", "width", "height", "size", "kind", "decoder"}``; raises
    DataError naming the path for a missing, corrupt, truncated or zero-frame video and an empty or unreadable
    frame folder."""
    from . import sampling

    src = sampling.open_source(path, folder_fps=folder_fps)
    px = src.read(np.unique([0, src.n - 1]))
    h, w = px.shape[1:3]
    return {"n_frames": int(src.n), "fps": float(src.fps), "duration_s": float(src.duration), "width": int(w),
            "height": int(h), "size": int(min(w, h)), "kind": src.kind, "decoder": src.decoder}


def validate(df: pd.DataFrame, label_set: str | None = None, probe_media: bool = False,
             strict: bool = False, folder_fps: float = 25.0, extra_reasons: dict | None = None):
    """Check a manifest row by row. Returns ``(ok_df, failed_df)``; ``failed_df`` has the rows' columns plus
    ``reason`` (every problem of the row, joined by "; "). Checks: required columns (a missing column raises),
    clip_id present and unique (every row of a duplicated id fails; all-digit ids compare zero-padded), label in
    the label set (from ``label_set`` or the ``label_set`` column), path is a regular non-empty file or a folder
    holding images (a symlink loop, broken symlink, FIFO, device file or socket gets its own reason); with
    ``probe_media=True`` each clip is also :func:`probe`-d (corrupt, truncated, zero-frame). ``extra_reasons``
    ({row position: reason}) adds problems found by a loader (e.g. a name escaping the clip folder).
    ``strict=True`` raises a DataError counting the failures instead."""
    missing = [c for c in ("clip_id", "path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"manifest lacks column(s) {missing}; it has {list(df.columns)}")
    reasons: dict[int, list[str]] = {}

    def fail(i, r):
        if r not in reasons.setdefault(i, []):
            reasons[i].append(r)

    for i, r in (extra_reasons or {}).items():
        fail(int(i), str(r))
    ids = df["clip_id"].map(lambda v: v if pd.isna(v) else pad_id(v)).astype("string")
    counts = ids.value_counts(dropna=True)
    for i, (cid, path, label) in enumerate(zip(ids, df["path"], df["label"])):
        if pd.isna(cid) or str(cid).strip() == "":
            fail(i, "empty clip_id")
        elif counts[cid] > 1:
            fail(i, f"duplicate clip_id {cid!r} (appears {counts[cid]} times)")
        ls = label_set if label_set is not None else (df["label_set"].iloc[i] if "label_set" in df else None)
        if ls is None or pd.isna(ls):
            fail(i, "no label_set (pass label_set= or give a label_set column)")
        else:
            try:
                known = _labels.get(str(ls))
            except ValueError as e:
                fail(i, str(e))
            else:
                if pd.isna(label) or str(label) not in known:
                    fail(i, f"unknown label {label!r} for label set {ls!r} (known: {', '.join(known)})")
        if pd.isna(path) or str(path) == "":
            fail(i, "no path")
            continue
        p = Path(str(path))
        problem = _path_problem(p)
        if problem:
            fail(i, problem)
        elif probe_media and i not in reasons:
            try:
                probe(p, folder_fps=folder_fps)
            except DataError as e:
                fail(i, str(e))
    bad = np.zeros(len(df), bool)
    bad[list(reasons)] = True
    ok = df[~bad].reset_index(drop=True)
    failed = df[bad].copy()
    failed["reason"] = ["; ".join(reasons[i]) for i in np.flatnonzero(bad)]
    failed = failed.reset_index(drop=True)
    if strict and len(failed):
        raise DataError(_failure_summary(failed, "manifest"))
    return ok, failed


def _failure_summary(failed: pd.DataFrame, what: str, k: int | None = 5) -> str:
    """``k=None``: every row (the CLI's ``--strict`` prints the full list)."""
    k = len(failed) if k is None else k
    lines = [f"{r.clip_id}: {r.reason}" for r in failed.head(k).itertuples()]
    more = f" (+{len(failed) - k} more)" if len(failed) > k else ""
    return f"{what}: {len(failed)} invalid row(s){more}:\n  " + "\n  ".join(lines)


def _finish(df: pd.DataFrame, label_set: str, strict: bool, what: str, extra_reasons: dict | None = None):
    ok, failed = validate(df, label_set, extra_reasons=extra_reasons)
    if strict:
        if len(failed):
            raise DataError(_failure_summary(failed, what))
        return ok
    if len(failed):
        log.warning("%s: %d of %d rows failed validation", what, len(failed), len(df))
    return ok, failed


# ----------------------------------------------------------------------------------------------------------
# DFEW
# ----------------------------------------------------------------------------------------------------------
def _splits(split) -> tuple[str, ...]:
    if split is None:
        return ("train", "test")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    return (split,)


def _check_fold(fold) -> int:
    if int(fold) not in range(1, 6):
        raise ValueError(f"fold must be 1..5, got {fold!r}")
    return int(fold)


def _read_dfew_csv(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise DataError(f"{csv}: split file not found")
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:
        raise DataError(f"{csv}: unparsable csv ({e})") from e
    raw.columns = [c.strip() for c in raw.columns]
    if set(raw.columns) != {"video_name", "label"}:
        raise DataError(f"{csv}: expected columns video_name,label; found {','.join(raw.columns)}")
    if raw.empty:
        raise DataError(f"{csv}: no rows (a header only): this split of the fold would be empty")
    rows = []
    for k, (vid, lab) in enumerate(zip(raw["video_name"], raw["label"])):
        line = k + 2  # 1-based, after the header
        if str(vid).strip() == "":
            raise DataError(f"{csv}: line {line}: empty video_name")
        try:
            li = int(str(lab).strip())
        except ValueError:
            raise DataError(f"{csv}: line {line}: label {lab!r} is not an integer 1..7") from None
        if not 1 <= li <= len(_labels.DFEW):
            raise DataError(f"{csv}: line {line} (video {vid}): label {li} out of range 1..{len(_labels.DFEW)}")
        bad = (f"{csv}: line {line}: video_name {str(vid).strip()!r} is not a plain clip name (it would resolve "
               "outside the dataset's Clip/ folder)") if escapes(vid) else ""
        rows.append((norm_id(vid), _labels.DFEW[li - 1], bad))
    return pd.DataFrame(rows, columns=["clip_id", "label", "_bad"])


def _pop_bad(df: pd.DataFrame, folder: Path) -> tuple[pd.DataFrame, dict]:
    """Split-file names that escape the clip folder (or whose path ends up outside it): {row: reason}."""
    bad = {}
    for i, (why, p) in enumerate(zip(df["_bad"], df["path"])):
        if why:
            bad[i] = why
        elif not _inside(p, folder):
            bad[i] = f"path {p} is outside the dataset's clip folder {folder}"
    return df.drop(columns=["_bad"]), bad


def _index_videos(folder: Path, recursive: bool = False) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    it = folder.rglob("*") if recursive else folder.iterdir()
    out: dict[str, Path] = {}
    for p in sorted(it):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out.setdefault(norm_id(p.stem), p)
    return out


def _index_folders(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {norm_id(p.name): p for p in sorted(folder.iterdir()) if p.is_dir()}


def load_dfew(root, fold: int = 1, split: str | None = "test", clips: str = "auto", strict: bool = True):
    """DFEW fold ``fold`` (1..5): labels from ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_<fold>.csv``
    (video_name,label with label 1..7 = ``labels.DFEW``). ``split`` "train", "test" or None (both).
    ``clips``: "auto" looks for each clip as a video ``Clip/original/<id>.(mp4|avi|...)`` (else any video named
    ``<id>`` under ``Clip/``), then a frame folder ``Clip/jpg_256/<id>/``, then ``Clip/clip_224x224/<id>/``;
    "video", "jpg_256" or "clip_224x224" use only that source. A clip found nowhere gets the path where it was
    expected and fails validation (see the module docstring for ``strict``)."""
    root = Path(root)
    fold = _check_fold(fold)
    if clips not in ("auto", *DFEW_CLIP_SOURCES):
        raise ValueError(f"clips must be 'auto' or one of {list(DFEW_CLIP_SOURCES)}, got {clips!r}")
    frames = []
    for sp in _splits(split):
        f = _read_dfew_csv(root / "EmoLabel_DataSplit" / f"{sp}(single-labeled)" / f"set_{fold}.csv")
        f["split"] = sp
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    order = list(DFEW_CLIP_SOURCES) if clips == "auto" else [clips]
    indices = {}
    for src in order:
        d = root / DFEW_CLIP_SOURCES[src]
        if src == "video":
            idx = _index_videos(root / "Clip", recursive=True)
            idx.update(_index_videos(d))  # Clip/original wins
            indices[src] = idx
        else:
            indices[src] = _index_folders(d)
    fallback = root / DFEW_CLIP_SOURCES[order[0]]

    def resolve(cid):
        for src in order:
            if cid in indices[src]:
                return str(indices[src][cid])
        return str(fallback / (cid + (".mp4" if order[0] == "video" else "")))

    df["path"] = [resolve(c) for c in df["clip_id"]]
    df["label_set"] = "dfew"
    df, bad = _pop_bad(df[list(MANIFEST_COLUMNS) + ["_bad"]], root / "Clip")
    return _finish(df, "dfew", strict, f"DFEW fold {fold} under {root}", extra_reasons=bad)


# ----------------------------------------------------------------------------------------------------------
# MAFW
# ----------------------------------------------------------------------------------------------------------
def _read_mafw_txt(txt: Path) -> pd.DataFrame:
    if not txt.is_file():
        raise DataError(f"{txt}: split file not found")
    rows = []
    with open(txt, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            s = line.strip()
            if not s:
                continue
            parts = s.split()
            if len(parts) != 2:
                raise DataError(f"{txt}: line {line_no}: expected '<clip>.mp4 <class>', got {s!r}")
            name, lab = parts[0], parts[1].lower()
            if lab not in _labels.MAFW:
                raise DataError(f"{txt}: line {line_no}: unknown class {parts[1]!r} "
                                f"(MAFW classes: {', '.join(_labels.MAFW)})")
            bad = (f"{txt}: line {line_no}: clip name {name!r} is not a plain file name (it would resolve "
                   "outside the dataset's clip folders)") if escapes(name) else ""
            rows.append((norm_id(name), lab, bad))
    if not rows:
        raise DataError(f"{txt}: empty split file")
    return pd.DataFrame(rows, columns=["clip_id", "label", "_bad"])


def load_mafw(root, fold: int = 1, split: str | None = "test", clips: str = "auto", strict: bool = True):
    """MAFW single-label fold ``fold`` (1..5): ``Train & Test Set/single/no_caption/set_<fold>/{train,test}.txt``
    with lines ``00025.mp4 anger`` (class *names*, canonical ``labels.MAFW``). Clips: ``clips="video"`` looks
    for ``<id>.<video suffix>`` in ``MAFW_VIDEO_DIRS`` (data/clips, clips, data/videos, videos, data/video,
    video, data — in that order, non-recursively); ``"frames"`` for a folder ``<id>/`` in ``MAFW_FRAME_DIRS``
    (data/frames, frames, data/faces, faces, data/jpg, jpg); ``"auto"`` tries videos then frame folders."""
    root = Path(root)
    fold = _check_fold(fold)
    if clips not in ("auto", "video", "frames"):
        raise ValueError(f"clips must be 'auto', 'video' or 'frames', got {clips!r}")
    base = root / "Train & Test Set" / "single" / "no_caption" / f"set_{fold}"
    parts = []
    for sp in _splits(split):
        f = _read_mafw_txt(base / f"{sp}.txt")
        f["split"] = sp
        parts.append(f)
    df = pd.concat(parts, ignore_index=True)
    index: dict[str, Path] = {}
    if clips in ("auto", "video"):
        for d in MAFW_VIDEO_DIRS:
            for k, v in _index_videos(root / d).items():
                index.setdefault(k, v)
    if clips in ("auto", "frames"):
        for d in MAFW_FRAME_DIRS:
            for k, v in _index_folders(root / d).items():
                index.setdefault(k, v)
    expected = root / (MAFW_FRAME_DIRS[0] if clips == "frames" else MAFW_VIDEO_DIRS[0])
    suffix = "" if clips == "frames" else ".mp4"
    df["path"] = [str(index.get(c, expected / (c + suffix))) for c in df["clip_id"]]
    df["label_set"] = "mafw"
    df, bad = _pop_bad(df[list(MANIFEST_COLUMNS) + ["_bad"]], root)
    return _finish(df, "mafw", strict, f"MAFW fold {fold} under {root}", extra_reasons=bad)


# ----------------------------------------------------------------------------------------------------------
# Generic manifest CSV, SynthFER, dispatch
# ----------------------------------------------------------------------------------------------------------
def load_manifest(csv, label_set: str | None = None, strict: bool = True):
    """A CSV with columns ``path, label`` and optionally ``split``, ``clip_id``, ``label_set`` (any others are
    kept). Relative paths are resolved against the CSV's folder; ``clip_id`` defaults to the path relative to
    the CSV without its suffix; ``split`` defaults to "all"; labels are lower-cased. ``label_set`` (argument)
    must agree with a ``label_set`` column if both are given."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"{csv}: manifest not found")
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{csv}: unparsable csv ({e})") from e
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}; found {list(df.columns)}")
    if "label_set" in df.columns:
        sets = set(df["label_set"].str.strip().str.lower())
        if label_set is not None and sets != {label_set.lower()}:
            raise DataError(f"{csv}: label_set column {sorted(sets)} disagrees with label_set={label_set!r}")
        df["label_set"] = df["label_set"].str.strip().str.lower()
    elif label_set is None:
        raise DataError(f"{csv}: no label_set column and no label_set= argument")
    else:
        df["label_set"] = label_set.lower()
    rel = df["path"].str.strip()
    empty = np.flatnonzero((rel == "").to_numpy())
    if len(empty):
        lines = ", ".join(str(k + 2) for k in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise DataError(f"{csv}: line(s) {lines}: empty path ({len(empty)} row(s)); every row needs the clip's "
                        "video file or frame folder")
    df["path"] = [str(p) if Path(p).is_absolute() else str(csv.parent / p) for p in rel]
    if "clip_id" not in df.columns:
        df["clip_id"] = [str(Path(p).with_suffix("")) for p in rel]
    # 25 and 00025 are one clip (also as the last part of a path-derived id: clips/25 == clips/00025)
    df["clip_id"] = ["/".join([*c.split("/")[:-1], pad_id(c.split("/")[-1])]) for c in df["clip_id"].astype(str)]
    if "split" not in df.columns:
        df["split"] = "all"
    df["label"] = df["label"].str.strip().str.lower()
    df = df[list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]]
    return _finish(df, None, strict, str(csv))


# A SynthFER generation writes into ``generated()/synthfer/.tmp-<hash>-<pid>`` and renames it when done; one
# killed with SIGKILL (or by a power loss) cannot clean up after itself, so the next call does.
TMP_QUIET_S = 120.0


def sweep_stale_tmp(root=None, quiet_s: float | None = None) -> list[Path]:
    """Remove SynthFER ``.tmp-*-<pid>`` folders left by a killed generation: the pid no longer exists on this
    host AND nothing in the folder changed for ``quiet_s`` seconds (default :data:`TMP_QUIET_S`; a generation
    alive on another host sharing the folder keeps writing files). Returns the folders removed."""
    import shutil
    import time

    from . import paths
    from .store import _pid_alive

    root = Path(root) if root is not None else paths.generated() / "synthfer"
    quiet_s = TMP_QUIET_S if quiet_s is None else float(quiet_s)
    removed = []
    if not root.is_dir():
        return removed
    for d in root.glob(".tmp-*"):
        m = re.fullmatch(r"\.tmp-.+-(\d+)", d.name)
        if not m or not d.is_dir() or _pid_alive(int(m.group(1))):
            continue
        try:
            newest = max([d.stat().st_mtime] + [q.stat().st_mtime for q in d.iterdir()])
        except OSError:
            continue
        if time.time() - newest < quiet_s:
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
            log.warning("removed %s, left by a killed SynthFER generation (pid %s)", d, m.group(1))
    return removed


def load(name: str, **kw):
    """Dispatch: ``"synthfer"`` -> ``synthfer.dataset(**kw)``, ``"dfew"`` -> :func:`load_dfew`, ``"mafw"`` ->
    :func:`load_mafw`, ``"manifest"`` -> :func:`load_manifest`."""
    key = str(name).lower()
    if key == "synthfer":
        from . import synthfer  # lazy: generating videos needs heavier imports

        sweep_stale_tmp()
        return synthfer.dataset(**kw)
    loaders = {"dfew": load_dfew, "mafw": load_mafw, "manifest": load_manifest}
    if key not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known: synthfer, {', '.join(loaders)}")
    return loaders[key](**kw)


# ----------------------------------------------------------------------------------------------------------
# The paper's balanced protocol
# ----------------------------------------------------------------------------------------------------------
def balanced_split(df: pd.DataFrame, n_per_class: int, seed: int = 0, label_set: str | None = None):
    """The paper's protocol (Sec. 3.1): a class-balanced test subset of ``n_per_class`` clips per class
    (45 x 11 = 495 for MAFW, 100 x 7 = 700 for DFEW), every other clip as train. The classes are the label set's
    (``label_set`` or the df's ``label_set`` column; else the labels present), so a class with no clip fails.
    Deterministic from ``seed`` and independent of the input row order (rows are sorted by clip_id first).
    Returns ``(train_df, test_df)`` with ``split`` set and the former split kept in ``source_split``.
    Raises DataError naming every class with fewer than ``n_per_class`` clips."""
    n_per_class = int(n_per_class)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if df["clip_id"].duplicated().any():
        dups = sorted(df.loc[df["clip_id"].duplicated(), "clip_id"].astype(str).unique())[:5]
        raise DataError(f"balanced_split: duplicate clip_id(s) {dups}")
    if label_set is None and "label_set" in df.columns and df["label_set"].nunique() == 1:
        label_set = str(df["label_set"].iloc[0])
    classes = list(_labels.get(label_set)) if label_set else sorted(df["label"].unique())
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise DataError(f"balanced_split: labels {unknown} are not in label set {label_set!r}")
    d = df.sort_values("clip_id", kind="stable").reset_index(drop=True)
    counts = d["label"].value_counts()
    short = [f"{c} ({int(counts.get(c, 0))})" for c in classes if counts.get(c, 0) < n_per_class]
    if short:
        raise DataError(f"balanced_split: {n_per_class} test clips per class needed; too few in: "
                        + ", ".join(short))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:  # fixed class order -> fixed RNG stream
        rows = np.flatnonzero(d["label"].to_numpy() == c)
        chosen.extend(rows[rng.permutation(len(rows))[:n_per_class]])
    is_test = np.zeros(len(d), bool)
    is_test[chosen] = True
    d = d.assign(source_split=d["split"] if "split" in d else None)
    test = d[is_test].assign(split="test")
    train = d[~is_test].assign(split="train")
    rank = {c: i for i, c in enumerate(classes)}
    test = test.sort_values(["label", "clip_id"], key=lambda s: s.map(rank) if s.name == "label" else s)
    return train.reset_index(drop=True), test.reset_index(drop=True)


SPLIT_FILE = "split.csv"


def write_split(train_df: pd.DataFrame, test_df: pd.DataFrame, out_dir) -> Path:
    """Write ``<out_dir>/split.csv`` with columns ``clip_id, label, split`` (+ ``label_set`` if known), test rows
    first. Returns the path. Reuse with :func:`read_split`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["clip_id", "label", "split"] + (["label_set"] if "label_set" in test_df.columns else [])
    both = pd.concat([test_df.assign(split="test"), train_df.assign(split="train")], ignore_index=True)[cols]
    if both["clip_id"].duplicated().any():
        raise DataError(f"write_split: clip_id(s) in both train and test: "
                        f"{sorted(both.loc[both.clip_id.duplicated(), 'clip_id'].astype(str))[:5]}")
    path = out / SPLIT_FILE
    both.to_csv(path, index=False, lineterminator="\n")
    return path


def read_split(path, df: pd.DataFrame | None = None):
    """Read a split written by :func:`write_split` (a file or its folder). Without ``df`` returns the split
    table; with a manifest ``df`` returns ``(train_df, test_df)``: the manifest's rows with ``split`` from the
    file. Raises DataError if the file is malformed, a clip of the split is missing from ``df`` or its label
    differs."""
    p = Path(path)
    if p.is_dir():
        p = p / SPLIT_FILE
    if not p.is_file():
        raise DataError(f"{p}: split file not found")
    try:
        s = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{p}: unparsable csv ({e})") from e
    missing = [c for c in ("clip_id", "label", "split") if c not in s.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}; found {list(s.columns)}")
    bad = ~s["split"].isin(["train", "test"])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{p}: line {k + 2}: split {s['split'].iloc[k]!r} is not 'train' or 'test'")
    if s["clip_id"].duplicated().any():
        k = int(np.flatnonzero(s["clip_id"].duplicated())[0])
        raise DataError(f"{p}: line {k + 2}: duplicate clip_id {s['clip_id'].iloc[k]!r}")
    if df is None:
        return s
    m = df.assign(_cid=df["clip_id"].astype(str)).drop(columns=["split"], errors="ignore")
    m = m.merge(s[["clip_id", "label", "split"]].rename(columns={"clip_id": "_cid", "label": "_label"}),
                on="_cid", how="right", indicator=True)
    absent = m.loc[m["_merge"] == "right_only", "_cid"].tolist()
    if absent:
        raise DataError(f"{p}: {len(absent)} clip(s) of the split are not in the manifest, e.g. {absent[:5]}")
    diff = m[m["label"].astype(str) != m["_label"]]
    if len(diff):
        r = diff.iloc[0]
        raise DataError(f"{p}: clip {r['_cid']!r} is labelled {r['_label']!r} in the split but "
                        f"{r['label']!r} in the manifest ({len(diff)} such clip(s))")
    m = m.drop(columns=["_cid", "_label", "_merge"])
    return (m[m["split"] == "train"].reset_index(drop=True), m[m["split"] == "test"].reset_index(drop=True))


# ----------------------------------------------------------------------------------------------------------
# What chapters call: a profile's `dataset` entry -> manifests
# ----------------------------------------------------------------------------------------------------------
def with_invalid(ok: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """The valid rows followed by the invalid ones, which carry their reason in an ``invalid`` column (None for
    valid rows); rows of a duplicated clip_id are kept once (the first, with every reason). ``run.classify``
    turns each invalid row into a failed answer with that reason, so invalid clips are counted, not dropped."""
    if failed is None or failed.empty:
        return ok.reset_index(drop=True)
    bad = failed.rename(columns={"reason": "invalid"})
    bad = bad[~bad["clip_id"].astype(str).isin(set(ok["clip_id"].astype(str)))]
    bad = bad.drop_duplicates("clip_id", keep="first")
    out = pd.concat([ok.assign(invalid=None), bad], ignore_index=True)
    out["invalid"] = out["invalid"].astype(object).where(out["invalid"].notna(), None)
    return out


def _repo_relative(p) -> str:
    """A relative dataset path in a profile means the repository root (chapters execute with cwd=chapters/),
    unless it exists relative to the working directory."""
    q = Path(str(p)).expanduser()
    if q.is_absolute() or q.exists():
        return str(q)
    from . import paths

    return str(paths.root() / q)


def from_spec(spec: dict, split: str = "test", strict: bool | None = None) -> pd.DataFrame:
    """The manifest a chapter evaluates on, from a profile's ``dataset`` entry.

    * ``{"name": "synthfer", "label_set": "mafw", "n_per_class": 45, "n_train": 3000, "size": 112, "seed": 0}``
      — the SynthFER balanced test split or the long-tailed train split (generated once, cached).
    * ``{"name": "mafw"|"dfew", "root": ..., "fold": 1, "n_per_class": 45, "seed": 0}`` — the real dataset
      under the paper's protocol (Sec. 3.1): a seeded class-balanced test subset of ``n_per_class`` per class
      drawn from all clips of the fold, the rest as train; the split file is written to
      ``paths.cache()/splits/<name>-fold<k>-n<n>-s<seed>/split.csv`` for reuse.
      Without ``n_per_class`` the dataset's own split files are used as they are.
    * ``{"name": "manifest", "csv": ..., "label_set": ...}`` — rows whose ``split`` equals ``split`` (all rows
      if the CSV has no split column).
    ``limit`` (optional) keeps the first ``limit`` clips per class of the TEST split, in a stable order (a seeded
    evaluation subset for small compute); the train split is never cut, its class distribution is the point.

    Invalid clips of real datasets and manifests (missing, empty, unknown label, duplicate id, a name escaping
    the clip folder, ...): by default (``strict=False``, or ``strict`` in the spec) they stay in the manifest
    with their reason in an ``invalid`` column (see :func:`with_invalid`; ``run.classify`` records them as
    failed rows and the run goes on); ``strict=True`` raises a DataError listing every invalid row. A filter
    that leaves no row (a split value that matches nothing, an empty split file) raises a DataError naming it.
    """
    spec = dict(spec)
    name = str(spec.pop("name", "")).lower()
    limit = spec.pop("limit", None)
    strict = bool(spec.pop("strict", False)) if strict is None else bool(strict)

    def load_real(loader, what, **kw):
        ok, failed = loader(strict=False, **kw)
        if strict and len(failed):
            raise DataError(_failure_summary(failed, what, k=None))
        if len(failed):
            log.warning("%s: %d invalid clip(s) kept as failed rows (strict=True aborts instead): %s", what,
                        len(failed), "; ".join(f"{c}: {r}" for c, r in zip(failed.clip_id[:3], failed.reason[:3])))
        return ok, failed
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "synthfer":
        from . import synthfer

        n_train = spec.pop("n_train", None)
        n_per_class = spec.pop("n_per_class", None)
        kw = {k: spec[k] for k in ("label_set", "size", "seed", "fps", "micro_share", "workers") if k in spec}
        kw.setdefault("workers", os.cpu_count() or 1)
        sweep_stale_tmp()
        if split == "test":
            df = synthfer.dataset(split="test", n_per_class=n_per_class, **kw)
        else:
            df = synthfer.dataset(split="train", n_total=n_train, **kw)
    elif name in ("mafw", "dfew"):
        loader = load_mafw if name == "mafw" else load_dfew
        root, fold = spec.get("root"), spec.get("fold", 1)
        if not root:
            raise ValueError(f"dataset spec {spec!r}: a {name} dataset needs `root` (your copy of {name.upper()})")
        root = _repo_relative(root)
        n_per_class = spec.get("n_per_class")
        what = f"{name.upper()} fold {fold} under {root}"
        if n_per_class is None:
            df = with_invalid(*load_real(loader, what, root=root, fold=fold, split=split))
        else:
            from . import paths

            ok, failed = load_real(loader, what, root=root, fold=fold, split=None)
            # invalid clips with a known label stay in the pool the balanced test split is drawn from (a drawn
            # one is a failed row, counted as wrong); those with no usable label or a duplicated id cannot be
            # placed in a class: they are reported here
            pool = with_invalid(ok, failed)
            known = pool["label"].isin(_labels.get(name))
            if (~known).any():
                log.warning("%s: %d invalid clip(s) with an unknown label left out of the balanced split: %s",
                            what, int((~known).sum()), ", ".join(pool.loc[~known, "clip_id"].astype(str)[:5]))
            train, test = balanced_split(pool[known], n_per_class, seed=spec.get("seed", 0), label_set=name)
            write_split(train, test, paths.cache() / "splits" /
                        f"{name}-fold{fold}-n{n_per_class}-s{spec.get('seed', 0)}")
            df = test if split == "test" else train
            if "invalid" in df.columns and df["invalid"].isna().all():
                df = df.drop(columns=["invalid"])
    elif name == "manifest":
        csv = spec.get("csv") or spec.get("path")
        if not csv:
            raise ValueError(f"dataset spec {spec!r}: a manifest needs `csv` (or `path`): the manifest CSV file")
        csv = _repo_relative(csv)
        df = with_invalid(*load_real(load_manifest, str(csv), csv=csv, label_set=spec.get("label_set")))
        if "split" in df.columns and df["split"].notna().any():
            sel = df[df["split"] == split]
            if sel.empty:
                values = sorted(map(str, df["split"].dropna().unique()))
                raise DataError(f"{csv}: the filter split == {split!r} matches none of its {len(df)} rows; "
                                f"split values present: {values} (case matters)")
            df = sel
    else:
        raise ValueError(f"unknown dataset name {name!r} in spec; known: synthfer, mafw, dfew, manifest")
    if limit is not None and split == "test":
        df = (df.sort_values("clip_id", kind="stable").groupby("label", sort=False, group_keys=False)
                .head(int(limit)))
    if df.empty:
        raise DataError(f"dataset {name} {spec} ({split} split): no clips")
    return df.reset_index(drop=True)
