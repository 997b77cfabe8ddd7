"""The chapter-facing layer: what every chapter notebook needs between ``run.classify`` and its prose.

A chapter is prose plus short calls into this module (and :mod:`emoprobe.verdicts` for its decisions):

```python
from emoprobe import chapter, verdicts
chapter.quiet()                                             # no progress bars, no known-harmless warnings
available, skipped = chapter.roles(models)                  # which model roles can run here, and why not
pred = chapter.predict(available, test, {"original": {"sampling": s},
                                         "shuffled": {"sampling": s, "shuffle_seed": 0}}, seed=seed)
pred.f1("MicroVLM", "original")                             # CI(point, lo, hi), bootstrap over clips, cached
pred.diff("MicroVLM", "original", "shuffled")               # PairedDiff(b − a, lo, hi, p), same clips
verdicts.change(pred, "MicroVLM", "original", "shuffled", effect=0.05, expect="none").glue("verdict_vlm")
```

* :func:`quiet` — the quiet settings for notebooks, in one place, each with its reason.
* :func:`roles` — ``models`` is a list of spec dicts (role = display name) or a mapping role -> spec (or
  None, or a list of specs). A role is available when it is set, its local checkpoint exists (config.json +
  *.safetensors), its backend's package imports and, for an HTTP model, its API-key variable is set. Each
  skipped role comes with one sentence for the page.
* :func:`predict` — loads each model ONCE under its display name (``spec["name"]``), runs every condition
  (a dict name -> keyword arguments of ``run.classify``: ``sampling``, ``shuffle_seed``, ``transform``,
  ``prompt``, ``score``, ``labels``; ``{"task": "msce", ...}`` calls ``run.msce`` instead), frees the model,
  and returns a :class:`Predictions`.
* :class:`Predictions` — the wide per-clip table (one row per clip, sorted by clip id; one column
  ``"<model> | <condition>"`` per model and condition holding the prediction, failed/unparsed as
  ``metrics.OTHER``) with cached bootstrap statistics from :mod:`emoprobe.metrics`: every bootstrap of one
  table uses the same seed and class strata, so its replicates repeat across calls and each column's macro-F1
  on each replicate is computed once.
* Figure helpers: :func:`chance_line` (every F1 figure has one), :func:`glue_figure`, :func:`note`.

The chance level of a class-balanced test set of K classes is 1/K macro-F1 (``Predictions.chance``).
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from emoprobe import metrics, paths

SEP = " | "   # between model and condition in a column name of the wide table


# ------------------------------------------------------------------------------------------------ quiet
class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


_QUIET_DONE = False


def quiet() -> None:
    """Silence what a rendered chapter must not show (idempotent). Each filter and its reason:

    * ``tqdm.TqdmWarning`` — ``tqdm.auto`` warns in a kernel without ipywidgets; the book shows no bars at all
      (every call here passes ``progress=False``);
    * transformers' weight-loading progress bars (``disable_progress_bar``, and ``HF_HUB_DISABLE_PROGRESS_BARS=1``
      in the environment for the helper processes ``run`` spawns) — bars are stderr noise in HTML;
    * the log line "`past_key_values`/`cache_params` are deprecated" of ``transformers.utils.generic`` — the HF
      backend's label scoring passes the KV cache this way; answers are unaffected (only that message is
      dropped, other transformers warnings still show);
    * ``emoprobe.threads.configure()`` where torch is already imported — not a filter: the project's one
      thread policy (one torch thread per process; two spin against each other on the shared 2-core machines).
    """
    global _QUIET_DONE
    # helper processes (run.py spawns them for long CPU runs) import transformers afresh: the environment is
    # what they inherit, and transformers reads this variable when it is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from tqdm import TqdmWarning

        warnings.filterwarnings("ignore", category=TqdmWarning)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    if not _QUIET_DONE:
        logging.getLogger("transformers.utils.generic").addFilter(
            _DropMessage("`past_key_values`/`cache_params` are deprecated"))
    if "torch" in sys.modules:
        from emoprobe import threads

        threads.configure()
    _QUIET_DONE = True


# ------------------------------------------------------------------------------------------------ roles
def display_name(spec) -> str:
    """The name a model is shown under: ``spec["name"]``, else its ``model`` (a loaded backend: its ``name``)."""
    if not isinstance(spec, dict):
        inner = getattr(spec, "spec", {}) or {}
        return str(getattr(spec, "name", None) or inner.get("name") or inner.get("model") or type(spec).__name__)
    return str(spec.get("name") or spec.get("model"))


def _is_local(spec: dict) -> bool:
    m = str(spec.get("model", ""))
    return spec.get("backend", "hf") == "vision" or m.startswith(("data/", "/", "./", "~", "../"))


def unavailable(spec: dict | None, role: str = "model", profile: str | None = None) -> str | None:
    """Why ``spec`` cannot run here (one sentence), or None when it can."""
    if not spec:
        where = f" for the `{profile}` profile" if profile else ""
        return f"`{role}` is not set{where}"
    if not isinstance(spec, dict) or not spec.get("model"):
        return f"`{role}` is not a model spec with a `model` entry: {spec!r}"
    backend = spec.get("backend", "hf")
    m = str(spec["model"])
    if _is_local(spec):
        p = Path(m).expanduser()
        if not p.exists():
            try:
                p = paths.root() / m
            except FileNotFoundError:
                pass
        if not ((p / "config.json").is_file() and any(p.glob("*.safetensors"))):
            return f"the checkpoint `{m}` of {display_name(spec)} is missing (no config.json + *.safetensors)"
    needs = {"hf": "transformers", "vision": "torch", "openai": None}.get(backend, "unknown")
    if needs == "unknown":
        return f"{display_name(spec)} names an unknown backend `{backend}`"
    if needs:
        import importlib.util

        if importlib.util.find_spec(needs) is None:
            return f"{display_name(spec)} needs the package `{needs}`, which is not installed"
    env = spec.get("api_key_env")
    if backend == "openai" and env and not os.environ.get(env):
        return f"{display_name(spec)} needs an API key in the environment variable `{env}`, which is not set"
    return None


def roles(models, profile: str | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """``(available, skipped)``: ``available`` maps a role to its spec, ``skipped`` a role to one sentence.

    ``models``: a list of specs (the role of each is its display name) or a mapping role -> spec | None |
    list of specs (a list role expands to one role per spec, named by the spec's display name).
    Order is kept."""
    items: list[tuple[str, Any]] = []
    if isinstance(models, dict):
        for role, v in models.items():
            if isinstance(v, (list, tuple)):
                items += [(display_name(s) if isinstance(s, dict) else f"{role}[{i}]", s) for i, s in enumerate(v)]
            else:
                items.append((role, v))
    elif isinstance(models, (list, tuple)):
        items = [(display_name(s) if isinstance(s, dict) else f"models[{i}]", s) for i, s in enumerate(models)]
    else:
        raise TypeError(f"models must be a list of specs or a mapping role -> spec, got {type(models).__name__}")
    available, skipped = {}, {}
    for role, spec in items:
        why = unavailable(spec, role, profile)
        if why is None:
            available[role] = dict(spec)
        else:
            skipped[role] = why
    return available, skipped


# ------------------------------------------------------------------------------------------------ predict
class _Named:
    """A loaded backend shown under a display name; answers and run-store keys are the inner backend's."""

    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name
        self.spec = getattr(inner, "spec", {})

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def classify(self, requests, score=False):
        return self.inner.classify(requests, score=score)

    def describe(self, requests):
        return self.inner.describe(requests)

    def __getattr__(self, item):
        return getattr(self.inner, item)


def load(spec: dict, device: str = "auto", **extra):
    """Load one model under its display name (``extra`` keys, e.g. ``attention=True``, go into an HF spec).
    An already loaded backend is wrapped as it is."""
    from emoprobe import models as _models

    if not isinstance(spec, dict):
        return _Named(spec, display_name(spec))
    s = {k: v for k, v in spec.items() if k not in ("name", "role")}
    if s.get("backend", "hf") == "hf":
        if device and device != "auto":
            s.setdefault("device", device)
        s.update(extra)
    return _Named(_models.load(s), display_name(spec))


def free() -> None:
    """Return memory after the caller dropped its last reference to a model."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # is_available() can take seconds without a GPU
        torch.cuda.empty_cache()


def _call(backend, manifest, kw: dict, seed: int, store, labels) -> pd.DataFrame:
    from emoprobe import run

    kw = dict(kw)
    task = kw.pop("task", "classify")
    kw.setdefault("labels", labels)
    if kw.get("score") and getattr(backend, "spec", {}).get("backend") == "openai":
        kw["score"] = False   # a chat API returns text, not label likelihoods
    fn = {"classify": run.classify, "msce": run.msce}.get(task)
    if fn is None:
        raise ValueError(f"condition task must be 'classify' or 'msce', got {task!r}")
    return fn(backend, manifest, seed=seed, store=store, progress=False, **kw)


def _kind(name: str, spec, kinds: dict | None) -> str:
    """A model's kind for the table: ``kinds[name]`` if given, else "vision-only" for the vision backend, else
    "vlm"."""
    sdict = spec if isinstance(spec, dict) else (getattr(spec, "spec", {}) or {})
    return (kinds or {}).get(name) or ("vision-only" if sdict.get("backend") == "vision" else "vlm")


def predict(models, manifest: pd.DataFrame, conditions: dict[str, dict], *, seed: int = 0, store=None,
            labels=None, device: str = "auto", n_boot: int = 1000, load_extra: dict | None = None,
            kinds: dict[str, str] | None = None) -> "Predictions":
    """Run every model (a list of specs or loaded backends, or the ``available`` mapping of :func:`roles`)
    under every condition.

    Each model is loaded once (``load(spec, device, **load_extra)``), every condition runs through
    ``run.classify`` (or ``run.msce`` for ``{"task": "msce"}``) with ``seed``, ``store``, ``progress=False``
    and the manifest's label set (or ``labels``), then the model is freed. Answers come from the run store
    when present. ``kinds``: model -> "vlm" | "vision-only" (default: from each spec's backend). A condition
    with its own ``manifest`` key (e.g. content-free inputs for calibration) runs on those clips and lands in
    ``Predictions.other[(model, condition)]``, not in the wide table."""
    specs = list(models.values()) if isinstance(models, dict) else list(models)
    runs, other, timing, kind = {}, {}, {}, {}
    for spec in specs:
        name = display_name(spec)
        kind[name] = _kind(name, spec, kinds)
        t0 = time.perf_counter()
        backend = load(spec, device, **(load_extra or {}))
        for cond, kw in conditions.items():
            kw = dict(kw)
            if "manifest" in kw:   # its own clips (e.g. content-free inputs): kept apart from the wide table
                other[(name, cond)] = _call(backend, kw.pop("manifest"), kw, seed, store, labels)
            else:
                runs[(name, cond)] = _call(backend, manifest, kw, seed, store, labels)
        del backend
        free()
        timing[name] = time.perf_counter() - t0
    lab = labels if labels is not None else _labels_of(manifest)
    return Predictions(runs, manifest, lab, n_boot=n_boot, seed=seed, kinds=kind, timing=timing, other=other)


def _labels_of(manifest: pd.DataFrame) -> list[str]:
    from emoprobe import labels as _labels

    sets = sorted(set(manifest["label_set"].dropna().astype(str).str.lower())) if "label_set" in manifest else []
    if len(sets) != 1:
        raise ValueError(f"manifest label sets {sets}: pass labels= to predict")
    return list(_labels.get(sets[0]))


# ------------------------------------------------------------------------------------------------ the table
class Predictions:
    """The wide per-clip table of one chapter: clip × model × condition, with cached bootstrap statistics.

    ``runs``: {(model, condition): run.classify frame}; ``manifest``: the clips (extra columns such as
    ``order_dependent`` or ``micro`` are carried into ``wide``); ``labels``: the label list (K = len).
    Conditions passed to the statistics may be one name or a list of names (the statistic is then the mean
    over them, e.g. over shuffle seeds). All intervals are 95% percentile bootstraps over clips, resampled
    within true class, ``n_boot`` replicates from ``seed`` (``metrics.bootstrap_ci`` /
    ``metrics.paired_bootstrap_diff``)."""

    CARRY = ("order_dependent", "micro", "micro_onset_s", "micro_offset_s", "variant", "duration_s")

    def __init__(self, runs: dict, manifest: pd.DataFrame, labels: Sequence[str], *, n_boot: int = 1000,
                 seed: int = 0, kinds: dict | None = None, timing: dict | None = None, other: dict | None = None):
        self.runs = dict(runs)
        self.other = dict(other or {})
        self.manifest = manifest
        self.labels = list(labels)
        self.k = len(self.labels)
        self.n_boot, self.seed = int(n_boot), int(seed)
        self.models = list(dict.fromkeys(m for m, _ in self.runs))
        self.conditions = list(dict.fromkeys(c for _, c in self.runs))
        self.kinds = {m: (kinds or {}).get(m, "vlm") for m in self.models}
        self.timing = dict(timing or {})
        keep = ["clip_id", "label"] + [c for c in self.CARRY if c in manifest.columns]
        wide = manifest[keep].copy()
        wide["clip_id"] = wide["clip_id"].astype(str)
        wide = wide.sort_values("clip_id", kind="stable").reset_index(drop=True)
        for (m, c), df in self.runs.items():
            _, y_pred = metrics.predictions(df, self.labels)
            s = pd.Series(y_pred, index=df["clip_id"].astype(str).to_numpy())
            missing = set(wide["clip_id"]) - set(s.index)
            if missing:
                raise ValueError(f"run {m!r} / {c!r} lacks {len(missing)} clip(s) of the manifest, "
                                 f"e.g. {sorted(missing)[:3]}")
            wide[self.col(m, c)] = s.reindex(wide["clip_id"]).to_numpy()
        self.wide = wide
        self._cache: dict = {}

    # --- names
    @staticmethod
    def col(model: str, condition) -> str:
        """Column of the wide table holding ``model``'s predictions under ``condition``."""
        return f"{model}{SEP}{condition}"

    @property
    def chance(self) -> float:
        """Macro-F1 of a uniform guess on a class-balanced test set: 1/K."""
        return 1.0 / self.k

    @property
    def n(self) -> int:
        return len(self.wide)

    def vlms(self) -> list[str]:
        return [m for m in self.models if self.kinds[m] == "vlm"]

    def vision(self) -> list[str]:
        return [m for m in self.models if self.kinds[m] == "vision-only"]

    def subset(self, mask) -> "Predictions":
        """The same predictions restricted to the rows of ``wide`` where ``mask`` (aligned with ``wide``)."""
        mask = np.asarray(mask, bool)
        ids = set(self.wide.loc[mask, "clip_id"])
        runs = {k: df[df["clip_id"].astype(str).isin(ids)].reset_index(drop=True) for k, df in self.runs.items()}
        return Predictions(runs, self.wide[mask], self.labels, n_boot=self.n_boot, seed=self.seed,
                           kinds=self.kinds, timing=self.timing)

    def join(self, *others: "Predictions") -> "Predictions":
        """One table holding the runs of this and ``others`` (same clips, same labels), e.g. models that were
        run with different conditions."""
        runs, other, kinds, timing = dict(self.runs), dict(self.other), dict(self.kinds), dict(self.timing)
        for o in others:
            runs.update(o.runs)
            other.update(o.other)
            kinds.update(o.kinds)
            timing.update(o.timing)
        return Predictions(runs, self.manifest, self.labels, n_boot=self.n_boot, seed=self.seed, kinds=kinds,
                           timing=timing, other=other)

    # --- per-replicate statistics (cached by replicate)
    def _conds(self, conditions) -> list:
        return list(conditions) if isinstance(conditions, (list, tuple)) else [conditions]

    def _stat_on(self, d: pd.DataFrame, model: str, conditions, stat: str = "macro_f1") -> float:
        key_rows = hashlib.blake2b(d.index.to_numpy().tobytes(), digest_size=16).digest()
        vals = []
        for c in self._conds(conditions):
            col = self.col(model, c)
            if col not in d.columns:
                raise KeyError(f"no predictions for model {model!r} under condition {c!r}; have "
                               f"{self.models} × {self.conditions}")
            key = (stat, col, key_rows)
            if key not in self._cache:
                if stat == "macro_f1":
                    v = metrics.macro_f1(d, self.labels, pred=col)
                elif stat == "accuracy":
                    v = float(metrics.correct(d, self.labels, pred=col).mean())
                else:
                    raise ValueError(f"stat must be 'macro_f1' or 'accuracy', got {stat!r}")
                self._cache[key] = v
            vals.append(self._cache[key])
        return float(np.mean(vals))

    def _boot(self) -> dict:
        return {"n_boot": self.n_boot, "seed": self.seed}

    def bootstrap(self, fn: Callable[[pd.DataFrame], float], cache: str | None = None) -> metrics.CI:
        """``metrics.bootstrap_ci`` of any statistic of the wide table (same replicates as every other call)."""
        key = ("ci", cache) if cache else None
        if key and key in self._cache:
            return self._cache[key]
        with warnings.catch_warnings():   # a statistic undefined in every replicate (NaN) gives a NaN interval
            warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
            ci = metrics.bootstrap_ci(self.wide, fn, **self._boot())
        if key:
            self._cache[key] = ci
        return ci

    def f1(self, model: str, conditions) -> metrics.CI:
        """Macro-F1 (point, lo, hi) of ``model`` under ``conditions`` (a name or a list: mean over them)."""
        return self.bootstrap(lambda d: self._stat_on(d, model, conditions),
                              cache=f"f1:{model}:{self._conds(conditions)}")

    def accuracy(self, model: str, conditions) -> metrics.CI:
        return self.bootstrap(lambda d: self._stat_on(d, model, conditions, "accuracy"),
                              cache=f"acc:{model}:{self._conds(conditions)}")

    def diff(self, model: str, a, b, stat: str = "macro_f1", model_b: str | None = None) -> metrics.PairedDiff:
        """Paired bootstrap of stat(``model_b`` or ``model``, b) − stat(``model``, a) on the same clips."""
        mb = model if model_b is None else model_b
        key = ("diff", stat, model, str(self._conds(a)), mb, str(self._conds(b)))
        if key not in self._cache:
            ta, tb = self.wide.assign(_side="a"), self.wide.assign(_side="b")

            def fn(d):
                if d["_side"].iat[0] == "b":
                    return self._stat_on(d, mb, b, stat)
                return self._stat_on(d, model, a, stat)

            self._cache[key] = metrics.paired_bootstrap_diff(ta, tb, fn, **self._boot())
        return self._cache[key]

    def paired(self, stat_a: Callable[[pd.DataFrame], float], stat_b: Callable[[pd.DataFrame], float]
               ) -> metrics.PairedDiff:
        """Paired bootstrap of ``stat_b(d) − stat_a(d)`` on the same resampled rows of the wide table (any two
        statistics, e.g. tail F1 of two models; use ``col(model, condition)`` inside them)."""
        ta, tb = self.wide.assign(_side="a"), self.wide.assign(_side="b")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
            return metrics.paired_bootstrap_diff(ta, tb, lambda d: stat_b(d) if d["_side"].iat[0] == "b" else stat_a(d),
                                                 **self._boot())

    def contrast(self, m1: str, m2: str, a, b) -> metrics.CI:
        """Bootstrap of Δ(m1) − Δ(m2), Δ = macro-F1(b) − macro-F1(a), on the same resampled clips."""
        return self.bootstrap(lambda d: (self._stat_on(d, m1, b) - self._stat_on(d, m1, a))
                              - (self._stat_on(d, m2, b) - self._stat_on(d, m2, a)),
                              cache=f"contrast:{m1}:{m2}:{a}:{b}")

    def statistic(self, kind: str, model: str, condition="test", *, freq: pd.Series | None = None,
                  tail: Sequence[str] | None = None) -> Callable[[pd.DataFrame], float]:
        """A statistic of ``model``'s predictions under ``condition`` as a function of (a replicate of) the wide
        table, for :meth:`bootstrap` and :meth:`paired`. ``kind``:

        * ``"macro_f1"``, ``"accuracy"`` (cached per replicate);
        * ``"freq_corr"`` — Pearson r between ``freq`` (per class) and the per-class F1 (:func:`pearson`);
        * ``"asymmetry"`` — mean over class pairs of rate(rare→common) − rate(common→rare), rarity by ``freq``
          (``metrics.asymmetry_pairs`` on the confusion counts);
        * ``"tail_f1"`` — mean F1 of the classes in ``tail``;
        * ``"entropy"`` — entropy (bits) of the predicted labels (``metrics.prediction_entropy``)."""
        col = self.col(model, condition)
        if kind in ("macro_f1", "accuracy"):
            return lambda d: self._stat_on(d, model, condition, kind)
        if kind == "freq_corr":
            return lambda d: pearson(freq, metrics.report(d, self.labels, pred=col).per_class["f1"].reindex(freq.index))
        if kind == "asymmetry":
            return lambda d: float(metrics.asymmetry_pairs(metrics.confusion(d, self.labels, normalize=None, pred=col),
                                                           freq)[0]["diff"].mean())
        if kind == "tail_f1":
            return lambda d: float(metrics.report(d, self.labels, pred=col).per_class.loc[list(tail), "f1"].mean())
        if kind == "entropy":
            return lambda d: float(metrics.prediction_entropy(d[col], self.labels)["entropy"])
        raise ValueError(f"unknown statistic {kind!r}: macro_f1, accuracy, freq_corr, asymmetry, tail_f1, entropy")

    def answer_shares(self, model: str, condition="test") -> pd.Series:
        """Share of the clips given each label (failed/unparsed answers are in no label's share)."""
        return self.wide[self.col(model, condition)].value_counts(normalize=True).reindex(self.labels, fill_value=0)

    # --- plain (non-bootstrap) views
    def report(self, model: str, condition) -> metrics.Report:
        return metrics.report(self.wide, self.labels, pred=self.col(model, condition))

    def per_class(self, model: str, conditions) -> pd.Series:
        """Per-class F1 (mean over ``conditions`` when several)."""
        parts = [self.report(model, c).per_class["f1"] for c in self._conds(conditions)]
        return pd.concat(parts, axis=1).mean(axis=1).rename("f1")

    def confusion(self, model: str, condition, normalize="true") -> pd.DataFrame:
        return metrics.confusion(self.wide, self.labels, normalize=normalize, pred=self.col(model, condition))

    def top_share(self, model: str, condition) -> float:
        """Share of clips given the most common answer (``metrics.top_answer_share``)."""
        return metrics.top_answer_share(self.wide, pred=self.col(model, condition))

    def curve(self, conditions: Iterable | None = None, x: str = "condition") -> pd.DataFrame:
        """Long table model, ``x`` (the condition), macro-F1, CI lo, CI hi, accuracy, top answer share."""
        rows = []
        for m in self.models:
            for c in (conditions or self.conditions):
                ci = self.f1(m, c)
                rows.append({"model": m, x: c, "macro-F1": ci.point, "CI lo": ci.lo, "CI hi": ci.hi,
                             "accuracy": float(metrics.correct(self.wide, self.labels, pred=self.col(m, c)).mean()),
                             "top answer share": self.top_share(m, c)})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Per model: clips, answers over all conditions, answers from the run store, failed, unparsed,
        seconds this build spent (loading + running)."""
        rows = {}
        for m in self.models:
            dfs = [df for (mm, _), df in self.runs.items() if mm == m]
            rows[m] = {"clips": self.n, "answers": int(sum(len(d) for d in dfs)),
                       "from run store": int(sum(d["cached"].sum() for d in dfs)),
                       "failed": int(sum((d["status"] == "failed").sum() for d in dfs)),
                       "unparsed": int(sum((d["status"] == "unparsed").sum() for d in dfs)),
                       "seconds": round(float(self.timing.get(m, float("nan"))), 1)}
        return pd.DataFrame(rows).T


def pearson(x, y) -> float:
    """Pearson r of two aligned sequences (``scipy.stats.pearsonr``); NaN when either is constant (a bootstrap
    replicate in which a model's per-class F1 does not vary has no correlation)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(stats.pearsonr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")


# ------------------------------------------------------------------------------------------------ per-clip extras
def extras(run_df: pd.DataFrame) -> pd.Series:
    """The ``extra`` JSON of each row of a run table, parsed (``{}`` where absent), indexed by clip id."""
    import json

    return pd.Series([json.loads(x) if isinstance(x, str) and x else {} for x in run_df["extra"]],
                     index=run_df["clip_id"].astype(str).to_numpy(), dtype=object)


def event_sampled(run_df: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """Per clip of ``events`` (indexed by clip id, columns ``micro_onset_s``/``micro_offset_s``): whether a frame
    the model was shown (``extra["t"]`` of the run) falls inside the event."""
    ex = extras(run_df)
    out = {}
    for cid, ev in events.iterrows():
        t = np.asarray(ex.get(str(cid), {}).get("t", []), float)
        out[str(cid)] = bool(((t >= ev["micro_onset_s"]) & (t <= ev["micro_offset_s"])).any())
    return pd.Series(out, dtype=bool)


def attention(run_df: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per clip whose answer recorded attention (``HFBackend`` with ``attention=True``): frames,
    ``visual share`` (attention on all frames' tokens), ``text share``, ``visual token share`` (the frames'
    share of the prompt's tokens), ``mass per frame``, ``mass per visual token`` and, for clips of ``events``
    (indexed by clip id, ``micro_onset_s``/``micro_offset_s``) whose event was shown, ``event share of
    visual`` / ``frame share in event`` = ``enrichment`` (1: the event gets exactly its share of frames)."""
    ex = extras(run_df)
    rows = []
    for r in run_df.itertuples():
        e = ex.get(str(r.clip_id), {})
        if r.status == "failed" or "attention" not in e:
            continue
        fr, t = np.asarray(e["attention"]["frames"], float), np.asarray(e.get("t", []), float)
        nv, nt = r.n_visual_tokens, r.n_text_tokens
        row = {"clip_id": str(r.clip_id), "frames": len(fr), "visual share": float(fr.sum()),
               "text share": float(e["attention"]["text"]),
               "visual token share": float(nv / (nv + nt)) if nv and nt else np.nan,
               "mass per frame": float(fr.mean()) if len(fr) else np.nan,
               "mass per visual token": float(fr.sum()) / nv if nv else np.nan, "enrichment": np.nan}
        if events is not None and str(r.clip_id) in events.index and len(t) == len(fr):
            ev = events.loc[str(r.clip_id)]
            inside = (t >= ev["micro_onset_s"]) & (t <= ev["micro_offset_s"])
            if inside.any() and fr.sum() > 0:
                row["enrichment"] = float(fr[inside].sum() / fr.sum()) / float(inside.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def mean_ci(values, n_boot: int = 1000, seed: int = 0) -> metrics.CI:
    """Bootstrap CI of the mean of ``values`` (NaN dropped; plain resampling): ``metrics.bootstrap_ci``."""
    v = pd.Series(values, dtype=float).dropna().reset_index(drop=True)
    if v.empty:
        return metrics.CI(np.nan, np.nan, np.nan)
    return metrics.bootstrap_ci(pd.DataFrame({"v": v}), lambda d: float(d["v"].mean()), n_boot=n_boot, seed=seed,
                                strata=False)


# ------------------------------------------------------------------------------------------------ page helpers
def chance_line(ax, k: int, label: str | None = "chance (1/K)", horizontal: bool = True) -> None:
    """Dashed line at the chance macro-F1 1/k of a class-balanced test set (every F1 figure has one)."""
    y = 1.0 / int(k)
    kw = dict(color="0.35", linestyle="--", linewidth=1, zorder=0.5, label=label)
    (ax.axhline if horizontal else ax.axvline)(y, **kw)


def freq_figure(freq: pd.Series, f1: pd.DataFrame, k: int, xlabel: str = "lexical frequency"):
    """Per-class F1 (one column per model) against a class frequency (``plots.freq_vs_f1``) with the chance line
    and the legend outside the axes; None when ``f1`` has no column (glue a placeholder instead)."""
    from emoprobe import plots

    if f1.shape[1] == 0:
        return None
    fig = plots.freq_vs_f1(freq, f1, xlabel=xlabel)
    chance_line(fig.axes[0], k)
    legend_outside(fig.axes[0])
    return fig


def legend_outside(ax, **kw) -> None:
    """Put the legend of ``ax`` to the right of the axes, where it cannot cover data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **kw)


def glue_figure(key: str, fig=None, reason: str = "") -> None:
    """Glue a figure (shown only where a ``{glue:figure}`` directive places it) and close it. ``fig=None``
    glues a one-line placeholder saying why the figure was not drawn (``reason``), so the page still builds."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    if fig is None:
        fig, ax = plt.subplots(figsize=(5, 0.6))
        ax.axis("off")
        ax.text(0.5, 0.5, f"not drawn: {reason}", ha="center", va="center", fontsize=9)
    glue(key, fig, display=False)
    plt.close(fig)


def glue_all(**values) -> None:
    """Glue several named values at once (numbers and text for the prose). NumPy scalars are glued as Python
    numbers: a ``{glue:text}`x:.3f``` role cannot format the text ``np.float64(...)``."""
    from myst_nb import glue

    for k, v in values.items():
        glue(k, v.item() if isinstance(v, np.generic) else v, display=False)


def ci_text(ci, fmt: str = ".2f") -> str:
    """``point [lo, hi]`` of a (point, lo, hi) interval, for tables."""
    p, lo, hi = tuple(ci)[:3]
    return f"{p:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def note_skipped(skipped: dict[str, str]) -> None:
    """One note per skipped role (the ``skipped`` mapping of :func:`roles`)."""
    for role, why in skipped.items():
        note(f"`{role}` skipped: {why}.")


def note(text: str) -> None:
    """A one-line note in the page (e.g. why a section was skipped)."""
    from IPython.display import Markdown, display

    display(Markdown(f"> **Note:** {text}"))


# ------------------------------------------------------------------------------------------------ label orders
def latin_orders(labels: Sequence[str], n_clips: int, n_sets: int, seed: int = 0) -> dict[str, tuple]:
    """``n_sets`` random label-order designs ``{"random order j": (base, rotation)}``.

    Set j draws one seeded permutation ``base`` of ``labels``; clip i (manifest order) is shown the cyclic
    rotation ``rotation[i]`` of it, the K rotations dealt evenly over the clips in a seeded order (a Latin-square
    design): every label is first for about 1/K of the clips, so a preference for a *position* is not confused
    with a preference for the label that happens to sit there."""
    labels = list(labels)
    k = len(labels)
    out = {}
    for j in range(int(n_sets)):
        base = [labels[i] for i in np.random.default_rng([seed, 6, j]).permutation(k)]
        rotation = np.random.default_rng([seed, 6, j, 1]).permutation(int(n_clips)) % k
        out[f"random order {j + 1}"] = (base, rotation)
    return out


def rotated(base: Sequence[str], rotation) -> list[list[str]]:
    """The label list each clip is shown: ``base`` rotated left by ``rotation[i]``."""
    base = list(base)
    return [base[int(r):] + base[:int(r)] for r in rotation]


def predict_orders(models, manifest: pd.DataFrame, conditions: dict[str, dict], orders: dict[str, tuple],
                   order_kwargs: dict | None = None, *, seed: int = 0, store=None, labels=None,
                   device: str = "auto", n_boot: int = 1000, load_extra: dict | None = None,
                   kinds: dict[str, str] | None = None) -> "Predictions":
    """:func:`predict` with label-order conditions added, every model loaded once for all of them.

    ``conditions`` as for :func:`predict`. ``orders``: ``{name: (base, rotation)}`` (e.g. :func:`latin_orders`):
    clip i (manifest order) is asked with the label list ``base`` rotated by ``rotation[i]`` and the keyword
    arguments ``order_kwargs`` of ``run.classify`` (``sampling``, ``prompt``, ...); one call per rotation,
    reassembled in manifest order. The returned table has, for each model and order condition, a column
    ``col(model, name) + " | position"``: the 1-based position of the answer in the list that clip was shown
    (0 when it names none; ``metrics.answer_positions``), and ``Predictions.shown[name]`` = the lists."""
    from emoprobe import run

    manifest = manifest.reset_index(drop=True)
    specs = list(models.values()) if isinstance(models, dict) else list(models)
    lab = list(labels) if labels is not None else _labels_of(manifest)
    shown = {name: rotated(base, rot) for name, (base, rot) in orders.items()}
    for name, (base, rot) in orders.items():
        if len(rot) != len(manifest) or sorted(base) != sorted(lab):
            raise ValueError(f"order {name!r}: needs one rotation per clip ({len(manifest)}) and a permutation "
                             f"of the labels; got {len(rot)} rotations of {list(base)}")
    runs, timing, kind = {}, {}, {}
    for spec in specs:
        name = display_name(spec)
        kind[name] = _kind(name, spec, kinds)
        t0 = time.perf_counter()
        backend = load(spec, device, **(load_extra or {}))
        for cond, kw in conditions.items():
            runs[(name, cond)] = _call(backend, manifest, kw, seed, store, lab)
        for cond, (base, rot) in orders.items():
            parts = []
            for r in sorted(set(int(x) for x in rot)):
                idx = np.flatnonzero(np.asarray(rot) == r)
                parts.append(run.classify(backend, manifest.iloc[idx], labels=rotated(base, [r])[0], seed=seed,
                                          store=store, progress=False, **(order_kwargs or {})))
            df = pd.concat(parts).set_index("clip_id").loc[manifest["clip_id"]].reset_index()
            runs[(name, cond)] = df
        del backend
        free()
        timing[name] = time.perf_counter() - t0
    pred = Predictions(runs, manifest, lab, n_boot=n_boot, seed=seed, kinds=kind, timing=timing)
    pred.shown = shown
    ids = manifest["clip_id"].astype(str).to_numpy()
    for (m, cond), df in runs.items():
        if cond in orders:
            pos = pd.Series(metrics.answer_positions(df["pred"], shown[cond]), index=ids)
            pred.wide[pred.col(m, cond) + SEP + "position"] = pos.reindex(pred.wide["clip_id"]).to_numpy()
    return pred


# ------------------------------------------------------------------------------------------------ images, faces
def image_grid(images: dict, ncols: int = 4, width: float | None = None):
    """One panel per image (``{caption: (H, W, 3) uint8}``, caption under the panel), ``ncols`` per row, at the
    page's full width and without smoothing, so thin drawings on small frames stay visible. Returns the Figure."""
    import matplotlib.pyplot as plt

    from emoprobe import plots

    width = width or plots.FIG_W
    n = len(images)
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, width / ncols * nrows * 1.15), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (caption, img) in zip(axes.ravel(), images.items()):
        ax.set_axis_on()
        ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(str(caption), fontsize=8)
    return fig


def face_check(manifest: pd.DataFrame, sampling: dict, detector: str = "mtcnn") -> pd.DataFrame:
    """Where the visual prompts' face source finds a face, per clip of ``manifest`` on the frames ``sampling``
    gives: ``frames``, ``found`` (frames with a face; 0 when the detector finds none in the clip) and, where the
    manifest has SynthFER ground truth (``gt_path``), ``iou``: the median intersection over union of the found
    boxes with the generator's face box."""
    from emoprobe import sampling as _sampling
    from emoprobe import transforms

    has_gt = "gt_path" in manifest.columns and manifest["gt_path"].notna().all()
    rows = []
    for row in manifest.to_dict("records"):
        fr = _sampling.sample(row["path"], **sampling)
        gt = None
        if has_gt:
            from emoprobe import synthfer

            gt = synthfer.load_gt(row)
        try:
            face = transforms.locate_face(fr, gt, detector, name=detector)
        except transforms.TransformError:
            rows.append({"clip_id": row["clip_id"], "frames": len(fr), "found": 0, "iou": np.nan})
            continue
        iou = np.nan
        if gt is not None and face.found.any():
            b, g = np.asarray(face.box, float), np.asarray(gt["box"], float)[fr.indices]
            iw = np.clip(np.minimum(b[:, 2], g[:, 2]) - np.maximum(b[:, 0], g[:, 0]), 0, None)
            ih = np.clip(np.minimum(b[:, 3], g[:, 3]) - np.maximum(b[:, 1], g[:, 1]), 0, None)
            inter = iw * ih
            union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
            iou = float(np.median((inter / union)[face.found]))
        rows.append({"clip_id": row["clip_id"], "frames": len(fr), "found": int(face.found.sum()), "iou": iou})
    return pd.DataFrame(rows)


def share_diff(pred: "Predictions", model: str, a, b, values, suffix: str = "") -> metrics.CI:
    """Bootstrap (the table's replicates) of the share of ``model``'s answers that fall in ``values`` under
    conditions ``b`` minus the share under ``a`` (``a=None``: the share under ``b`` alone). ``a``/``b`` are a
    condition or a list (mean over them); ``suffix`` selects a derived column, e.g. ``SEP + "position"`` of
    :func:`predict_orders` with ``values={1}`` (answers naming the first-listed label). Failed and unparsed
    answers (``metrics.OTHER``) count in the denominator."""
    values = set(values)
    conds = lambda c: list(c) if isinstance(c, (list, tuple)) else [c]  # noqa: E731
    cols_b = [pred.col(model, c) + suffix for c in conds(b)]
    cols_a = [pred.col(model, c) + suffix for c in conds(a)] if a is not None else []
    for c in cols_a + cols_b:
        if c not in pred.wide.columns:
            raise KeyError(f"no column {c!r} in the prediction table")

    def share(d, cols):
        return float(np.mean([d[c].isin(values).mean() for c in cols])) if cols else 0.0

    key = f"share:{model}:{cols_a}:{cols_b}:{sorted(map(str, values))}"
    return pred.bootstrap(lambda d: share(d, cols_b) - share(d, cols_a), cache=key)
