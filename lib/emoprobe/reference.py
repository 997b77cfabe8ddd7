"""The paper's numbers (arXiv:2604.15280v1) as tidy DataFrames, read from ``data/reference/*.csv``.

The CSV files are transcriptions of the paper's tables (see ``data/reference/README.md`` for the source of each
file and the transcription notes). Nothing here computes a result: these are the numbers our own measurements are
compared against.

>>> from emoprobe import reference
>>> reference.load("table2_shuffle").query("model == 'qwen2.5-vl'")
>>> reference.per_class_f1("mafw", "qwen2.5-vl", "original")   # Series label -> F1 (Table S2)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import labels as _labels
from . import paths

# name -> (columns that must be present, numeric columns, {column: allowed values})
_MODELS = ("mae-dfer", "hicmae", "qwen2.5-vl", "qwen2.5-omni", "qwen3-vl", "emotionqwen", "video-llava",
           "llava-next-video", "internvl3", "gemini-2.5-flash")
_DATASETS = ("mafw", "dfew")
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple]]] = {
    "table1_correlations": (("row", "col", "r", "p"), ("r", "p"),
                            {"row": ("ngram_en", "ngram_zh", "gemini-2.5-flash", "qwen2.5-vl"),
                             "col": ("ngram_en", "ngram_zh", "gemini-2.5-flash", "qwen2.5-vl")}),
    "table2_shuffle": (("model", "condition", "dataset", "precision", "recall", "f1", "model_kind"),
                       ("precision", "recall", "f1"),
                       {"model": _MODELS, "condition": ("original", "shuffled"), "dataset": _DATASETS,
                        "model_kind": ("vision-only", "vlm")}),
    "table3_msce": (("model", "condition", "dataset", "precision", "recall", "f1"), ("precision", "recall", "f1"),
                    {"model": _MODELS, "condition": ("baseline", "msce"), "dataset": _DATASETS}),
    "tableS1_visual_prompting": (("method", "dataset", "model", "precision", "recall", "f1"),
                                 ("precision", "recall", "f1"),
                                 {"method": ("baseline", "red-circle", "heatmap", "focused-heatmap", "video-montage",
                                             "motionflow-arrow", "pointtrack", "msce"),
                                  "dataset": ("mafw",), "model": ("qwen2.5-vl",)}),
    "tableS2S3_per_class_f1": (("dataset", "model", "condition", "label", "f1"), ("f1",),
                               {"dataset": _DATASETS, "model": _MODELS, "condition": ("original", "shuffled"),
                                "label": tuple(sorted(set(_labels.MAFW) | set(_labels.DFEW)))}),
    "tableS2S3_macro_f1": (("dataset", "model", "condition", "macro_f1"), ("macro_f1",),
                           {"dataset": _DATASETS, "model": _MODELS, "condition": ("original", "shuffled")}),
    "text_per_class_f1": (("dataset", "model", "label", "f1", "section", "quote"), ("f1",),
                          {"dataset": _DATASETS, "model": _MODELS}),
    "fps_claims": (("figure", "model", "claim", "value", "quote"), (),
                   {"figure": ("fig4", "figS2"), "model": _MODELS}),
    "known_discrepancies": (("check", "table", "dataset", "model", "condition", "expected", "reported", "note"),
                            (), {}),
    # a second paper (not arXiv:2604.15280): the prompt-sensitivity study of chapter 06, headline numbers only
    "prompt_sensitivity_004": (("claim", "model", "dataset", "metric", "bound", "value", "source", "quote"),
                               ("value",),
                               {"bound": ("point", "min", "max"), "source": ("arXiv:2502.05660",)}),
}

# Paper model name (as printed in the tables) -> the slug used in the CSV files.
PAPER_NAMES = {
    "mae-dfer": "MAE-DFER", "hicmae": "HiCMAE", "qwen2.5-vl": "Qwen2.5-VL", "qwen2.5-omni": "Qwen2.5-Omni",
    "qwen3-vl": "Qwen3-VL", "emotionqwen": "EmotionQwen", "video-llava": "Video-LLaVA",
    "llava-next-video": "LLaVA-NeXT-V", "internvl3": "InternVL-3.0", "gemini-2.5-flash": "Gemini2.5-Flash",
}


def names() -> list[str]:
    """The table names ``load`` accepts."""
    return list(TABLES)


def _dir() -> Path:
    """``paths.reference()``; outside a checkout (no repository root found) the folder next to the package."""
    try:
        return paths.reference()
    except FileNotFoundError:
        return Path(__file__).resolve().parents[2] / "data" / "reference"


def _path(name: str) -> Path:
    return _dir() / f"{name}.csv"


def load(name: str, path: str | Path | None = None) -> pd.DataFrame:
    """Load reference table ``name`` (see ``names()``), validating its columns and values.

    ``path`` overrides the file location (default ``data/reference/<name>.csv``). A missing file raises
    ``FileNotFoundError`` naming it; a malformed one raises ``ValueError`` naming the file and the problem.
    """
    if name not in TABLES:
        raise KeyError(f"unknown reference table {name!r}; known: {names()}")
    p = Path(path) if path is not None else _path(name)
    if not p.is_file():
        raise FileNotFoundError(f"reference table {name!r} not found: {p}")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several types for broken CSV
        raise ValueError(f"{p}: cannot be read as CSV ({e})") from e
    required, numeric, allowed = TABLES[name]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {missing}; expected {list(required)}")
    if df.empty and name != "known_discrepancies":
        raise ValueError(f"{p}: no rows")
    for c in numeric:
        vals = pd.to_numeric(df[c].replace("", None), errors="coerce")
        bad = df[c][vals.isna() & (df[c] != "")]
        if len(bad):
            raise ValueError(f"{p}: column {c!r} has non-numeric value(s) {bad.unique().tolist()[:5]}")
        if vals.isna().any() and not (name == "table1_correlations" and c == "p"):
            raise ValueError(f"{p}: column {c!r} has empty value(s) in row(s) {list(df.index[vals.isna()] + 2)}")
        df[c] = vals.astype(float)
    for c, ok in allowed.items():
        bad = sorted(set(df[c]) - set(ok))
        if bad:
            raise ValueError(f"{p}: column {c!r} has unexpected value(s) {bad}; allowed: {list(ok)}")
    return df


def per_class_f1(dataset: str, model: str, condition: str = "original") -> pd.Series:
    """Per-class F1 from Table S2 (MAFW) / S3 (DFEW) as a Series indexed by canonical label, in the label order
    of ``emoprobe.labels.get(dataset)``. ``model`` is a slug or the paper's name; ``condition`` original|shuffled."""
    model = slug(model)
    df = load("tableS2S3_per_class_f1")
    sel = df[(df.dataset == dataset.lower()) & (df.model == model) & (df.condition == condition)]
    if sel.empty:
        raise KeyError(f"no per-class F1 for dataset={dataset!r} model={model!r} condition={condition!r} "
                       f"in {_path('tableS2S3_per_class_f1')}")
    s = sel.set_index("label")["f1"]
    s = s.reindex(list(_labels.get(dataset)))
    s.name = f"{model} ({condition})"
    return s


def fps_claim(figure: str, model: str, claim: str) -> str:
    """The value of one row of ``fps_claims`` (e.g. ``fps_claim("fig4", "qwen2.5-vl", "peak_fps")`` -> "5");
    KeyError naming the row when it is absent."""
    df = load("fps_claims")
    sel = df[(df.figure == figure) & (df.model == slug(model)) & (df.claim == claim)]
    if sel.empty:
        raise KeyError(f"no fps claim figure={figure!r} model={model!r} claim={claim!r} in {_path('fps_claims')}")
    return str(sel["value"].iloc[0])


def slug(model: str) -> str:
    """Accept a slug or the paper's printed name ('LLaVA-NeXT-V', 'Gemini2.5-Flash', ...)."""
    if model in PAPER_NAMES:
        return model
    inv = {v.lower(): k for k, v in PAPER_NAMES.items()}
    try:
        return inv[model.lower()]
    except KeyError:
        raise KeyError(f"unknown paper model {model!r}; known: {sorted(PAPER_NAMES)}") from None


def paper_models() -> dict[str, dict]:
    """Paper model slug -> the spec the ``paper`` profile uses for it.

    Each value has ``paper_name``, ``backend`` ("hf" | "openai" | None), ``model`` (HF id, API model name, or None
    where the weights are not on the Hub) and ``note``. EmotionQwen's authors publish their checkpoint only as a
    Google-Drive archive (github.com/24DavidHuang/Emotion-Qwen, README 2025-03-29; custom code, loaded with
    ``trust_remote_code``): it is user-supplied, ``model`` is None until the user gives a local path. MAE-DFER and
    HiCMAE are vision-only classifiers fine-tuned by the authors; their fine-tuned weights are not published, so the
    book replaces them with its own vision-only classifier (``emoprobe.vision``).
    """
    hf = lambda m, note="": {"backend": "hf", "model": m, "note": note}  # noqa: E731
    out = {
        "qwen2.5-vl": hf("Qwen/Qwen2.5-VL-7B-Instruct"),
        "qwen3-vl": hf("Qwen/Qwen3-VL-8B-Instruct"),
        "internvl3": hf("OpenGVLab/InternVL3-8B-hf"),
        "llava-next-video": hf("llava-hf/LLaVA-NeXT-Video-7B-hf"),
        "video-llava": hf("LanguageBind/Video-LLaVA-7B-hf"),
        "qwen2.5-omni": hf("Qwen/Qwen2.5-Omni-7B", "audio-visual; the paper does not say whether audio was used"),
        "gemini-2.5-flash": {"backend": "openai", "model": "gemini-2.5-flash",
                             "note": "Google's OpenAI-compatible endpoint; API key from the environment"},
        "emotionqwen": {"backend": "hf", "model": None,
                        "note": "user-supplied: weights only on Google Drive "
                                "(https://github.com/24DavidHuang/Emotion-Qwen), trust_remote_code"},
        "mae-dfer": {"backend": None, "model": None,
                     "note": "vision-only; fine-tuned weights unpublished (replaced by emoprobe.vision)"},
        "hicmae": {"backend": None, "model": None,
                   "note": "vision-only; fine-tuned weights unpublished (replaced by emoprobe.vision)"},
    }
    return {k: {"paper_name": PAPER_NAMES[k], **v} for k, v in out.items()}
