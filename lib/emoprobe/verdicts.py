"""Decision rules that cannot be fooled by a model at chance or by a test too small to see the effect.

A chapter states a claim of the paper, measures one statistic with a 95% interval (a bootstrap over clips from
:mod:`emoprobe.metrics`, usually through :class:`emoprobe.chapter.Predictions`) and turns it into a
:class:`Verdict` with one of three words:

* ``"replicated here"`` / ``"not replicated"`` only when BOTH gates pass:

  1. **above chance** — the model whose behaviour the claim is about has a macro-F1 interval whose lower bound
     exceeds chance (1/K on a class-balanced test set) by ``margin``. The default margin is
     :data:`CHANCE_MARGIN`; rules about a *drop* use ``max(CHANCE_MARGIN, effect)``: a model needs at least a
     paper-sized drop of room above the guessing level, or it cannot lose that much whatever it does;
  2. **power** — the test could have seen a paper-sized effect: the minimum detectable effect
     :func:`mde` (two-sided level :data:`ALPHA`, power :data:`POWER`, from the interval's standard error)
     is at most the paper's effect size. A test whose interval lies entirely beyond a paper-sized effect
     (e.g. a drop whose 95% interval is below −effect) has resolved one, whatever its standard error, and one
     whose interval lies entirely on the other side of 0 contradicts the claimed direction: there the power
     gate is passed by the interval itself. A test too small to see a paper-sized effect can still pass this
     way only when what it saw is far from the paper's effect.

* ``"inconclusive"`` otherwise, and the reason names the gate that failed (or says that the interval lies
  between the two decisions).

Rules on numbers (unit-testable, used by the table-level rules):

* :func:`decide_effect` — the claim is that an effect of at least ``effect`` exists in a direction.
  Replicated if the interval excludes 0 on the claimed side; not replicated if it excludes a paper-sized
  effect (the whole interval is on the near side of ``effect``).
* :func:`decide_null` — the claim is that there is NO effect of paper size (e.g. "VLMs are indifferent to
  frame order"). Replicated if the whole interval lies on the harmless side of ``-effect`` (equivalence
  within the paper's effect); not replicated if the interval excludes 0 on the harmful side while reaching a
  paper-sized effect.
* :func:`decide_bell` — the shape claim of chapter 04: the peak rate is NOT picked from the data but fixed
  beforehand (the paper's stated peak), so no peak-picking correction is needed; "bell" needs both the rise
  (peak − lowest rate) and the fall (peak − highest rate) to exceed 0 (an intersection-union test: each at
  level ALPHA, the conjunction at ALPHA without correction). Not replicated if either side excludes a
  paper-sized change.

Table-level rules take a :class:`emoprobe.chapter.Predictions` (the wide per-clip table) and condition names:
:func:`change` (effect or no-effect claim about one model between two conditions), :func:`effect_of` (any
statistic about a model, gated on that model's macro-F1) and :func:`bell`.

``Verdict.glue(key)`` glues the word, the sentence and a JSON record ``finding_<key>`` that the book runner
collects into the Findings page (:func:`emoprobe.book.write_findings_page`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from scipy import stats

REPLICATED = "replicated here"
NOT_REPLICATED = "not replicated"
INCONCLUSIVE = "inconclusive"
WORDS = (REPLICATED, NOT_REPLICATED, INCONCLUSIVE)

ALPHA = 0.05          # two-sided level of every interval and of the power computation
POWER = 0.80          # power at which the minimum detectable effect is computed
CHANCE_MARGIN = 0.05  # macro-F1 above 1/K that the lower bound of a model's interval must clear
FINDING_PREFIX = "finding_"


@dataclass(frozen=True)
class Verdict:
    """One decided claim, ready to glue.

    ``word``: one of :data:`WORDS`; ``statistic``: the deciding statistic's point value; ``interval``: its 95%
    interval ``(lo, hi)``; ``sentence``: one sentence for the page with the numbers; ``reason``: why this word
    (which gate failed, or which side of which bound the interval lies on). Optional: ``claim`` (the paper's
    claim in a few words), ``measure`` (what the statistic is), ``paper`` (the paper's number, as text),
    ``mde`` (minimum detectable effect of the test), ``model``, ``chapter``."""
    word: str
    statistic: float
    interval: tuple[float, float]
    sentence: str
    reason: str
    claim: str = ""
    measure: str = ""
    paper: str = ""
    mde: float = float("nan")
    model: str = ""
    chapter: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.word not in WORDS:
            raise ValueError(f"verdict word must be one of {WORDS}, got {self.word!r}")
        lo, hi = (float(x) for x in self.interval)
        object.__setattr__(self, "interval", (lo, hi))
        object.__setattr__(self, "statistic", float(self.statistic))

    def __str__(self) -> str:
        return f"{self.word}: {self.sentence}"

    @property
    def ours(self) -> str:
        """The statistic with its interval, as the Findings page prints it."""
        if math.isnan(self.statistic):
            return "n/a"
        return f"{self.statistic:+.3f} [{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]"

    def record(self) -> dict:
        """JSON-able dict (NaN as None) of every field."""
        d = asdict(self)
        d["interval"] = list(self.interval)
        return json.loads(json.dumps(d, default=str).replace("NaN", "null"))

    def glue(self, key: str, chapter: str = "") -> "Verdict":
        """Glue ``key`` (the word), ``key_sentence``, ``key_text`` (word: sentence), ``key_reason`` and the
        record ``finding_<key>`` (a JSON string) that the Findings page collects. Returns self."""
        from myst_nb import glue

        glue(key, self.word, display=False)
        glue(f"{key}_sentence", self.sentence, display=False)
        glue(f"{key}_text", str(self), display=False)
        glue(f"{key}_reason", self.reason, display=False)
        rec = self.record()
        rec["key"] = key
        if chapter and not rec.get("chapter"):
            rec["chapter"] = chapter
        glue(FINDING_PREFIX + key, json.dumps(rec, ensure_ascii=False), display=False)
        return self


class Gate(tuple):
    """``(ok, text)``: whether a precondition of a decisive verdict holds, and a sentence saying so."""
    __slots__ = ()

    def __new__(cls, ok: bool, text: str):
        return super().__new__(cls, (bool(ok), str(text)))

    ok = property(lambda self: self[0])
    text = property(lambda self: self[1])


def _z(p: float) -> float:
    return float(stats.norm.ppf(p))


def standard_error(interval: Sequence[float], alpha: float = ALPHA) -> float:
    """Standard error implied by a (1 − alpha) interval: its width / (2·z_{1−alpha/2})."""
    lo, hi = (float(x) for x in interval)
    return (hi - lo) / (2 * _z(1 - alpha / 2))


def mde(interval: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided test at level ``alpha`` with ``power``:
    (z_{1−alpha/2} + z_{power}) · SE, SE from the interval (:func:`standard_error`). With the defaults 2.80 SE."""
    return (_z(1 - alpha / 2) + _z(power)) * standard_error(interval, alpha)


def chance_level(k: int) -> float:
    """Expected macro-F1 of a uniform guess on a class-balanced test set of ``k`` classes: 1/k."""
    if int(k) < 2:
        raise ValueError(f"chance level needs at least 2 classes, got {k}")
    return 1.0 / int(k)


def above_chance(f1_ci: Sequence[float], k: int, margin: float = CHANCE_MARGIN, model: str = "the model") -> Gate:
    """Gate 1: the lower bound of ``f1_ci`` = (point, lo, hi) exceeds 1/k + margin."""
    point, lo, hi = (float(x) for x in f1_ci)
    c = chance_level(k)
    ok = lo > c + margin
    rel = "clears" if ok else "does not clear"
    return Gate(ok, f"{model}'s macro-F1 {point:.3f} [{lo:.3f}, {hi:.3f}] {rel} chance {c:.3f} + margin "
                    f"{margin:.3f} = {c + margin:.3f}")


def powered(interval: Sequence[float], effect: float, alpha: float = ALPHA, power: float = POWER) -> Gate:
    """Gate 2: the minimum detectable effect of the test (from ``interval``) is at most |effect|."""
    m = mde(interval, alpha, power)
    ok = m <= abs(float(effect))
    rel = "≤" if ok else ">"
    return Gate(ok, f"the smallest effect this test detects with {power:.0%} power is {m:.3f} {rel} the "
                    f"paper-sized {abs(float(effect)):.3f}")


def _gated(gates: list[Gate]) -> str | None:
    failed = [g.text for g in gates if not g.ok]
    return "; ".join(failed) if failed else None


def _interval(stat) -> tuple[float, float, float]:
    """(point, lo, hi) of a metrics.CI / PairedDiff / tuple."""
    t = tuple(stat)
    return float(t[0]), float(t[1]), float(t[2])


def _fmt(point, lo, hi) -> str:
    return f"{point:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _gate(rule: str, stat, effect, direction: int, margin, f1_ci, k, model):
    """What :func:`decide_effect` and :func:`decide_null` share: the interval signed so that the claimed (or
    harmful) direction is positive, the gates (above chance; power) and the minimum detectable effect.
    Returns ``(point, lo, hi, effect, s_lo, s_hi, mde, failed gate or None)``."""
    point, lo, hi = _interval(stat)
    effect = abs(float(effect))
    if effect <= 0:
        raise ValueError(f"{rule}: effect (the paper-sized effect) must be non-zero")
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    s_lo, s_hi = (lo, hi) if direction > 0 else (-hi, -lo)
    if margin is None:
        margin = max(CHANCE_MARGIN, effect) if direction < 0 else CHANCE_MARGIN
    # power is not needed when the interval itself settles the claim: it lies beyond a paper-sized effect (the
    # test resolved one) or entirely on the opposite side of 0
    gates = [] if s_lo > effect or s_hi < 0 else [powered((lo, hi), effect)]
    if f1_ci is not None:
        gates.insert(0, above_chance(f1_ci, k, margin, model))
    return point, lo, hi, effect, s_lo, s_hi, mde((lo, hi)), _gated(gates)


def decide_effect(stat, effect: float, *, direction: int = +1, f1_ci=None, k: int | None = None,
                  margin: float | None = None, measure: str = "the effect", claim: str = "", paper: str = "",
                  model: str = "the model") -> Verdict:
    """Claim: an effect of size ``effect`` (> 0) exists with sign ``direction`` (+1: the statistic grows, −1: a
    drop). ``stat`` = (point, lo, hi). Gates: ``f1_ci`` (point, lo, hi) above chance for ``k`` classes (skipped
    when ``f1_ci`` is None, e.g. a claim not about a model; for a drop the margin defaults to
    max(CHANCE_MARGIN, effect), room to lose a paper-sized drop) and power (:func:`powered`).

    * replicated: the interval excludes 0 on the claimed side (direction·lo' > 0);
    * not replicated: it excludes a paper-sized effect (direction·hi' < effect);
    * inconclusive otherwise or when a gate fails."""
    point, lo, hi, effect, s_lo, s_hi, m, failed = _gate("decide_effect", stat, effect, direction, margin, f1_ci,
                                                         k, model)
    txt = f"{measure} = {_fmt(point, lo, hi)}"
    side = "above" if direction > 0 else "below"
    if failed:
        return Verdict(INCONCLUSIVE, point, (lo, hi), f"{txt}; inconclusive because {failed}", failed,
                       claim=claim, measure=measure, paper=paper, mde=m, model=model)
    if s_lo > 0:
        word, reason = REPLICATED, f"the interval lies {side} 0"
    elif s_hi < effect:
        word, reason = NOT_REPLICATED, (f"the interval excludes a paper-sized effect "
                                        f"({'+' if direction > 0 else '−'}{effect:.3f})")
    else:
        word, reason = INCONCLUSIVE, f"the interval includes both 0 and a paper-sized effect ({effect:.3f})"
    return Verdict(word, point, (lo, hi), f"{txt}: {reason}", reason, claim=claim, measure=measure, paper=paper,
                   mde=m, model=model)


def decide_null(stat, effect: float, *, direction: int = -1, f1_ci=None, k: int | None = None,
                margin: float | None = None, measure: str = "the change", claim: str = "", paper: str = "",
                model: str = "the model") -> Verdict:
    """Claim: NO effect of paper size in ``direction`` (−1: no paper-sized drop). ``stat`` = (point, lo, hi).
    Gates as :func:`decide_effect`; for a drop claim the chance margin defaults to max(CHANCE_MARGIN, effect):
    the model needs room above chance to lose a paper-sized drop.

    * replicated: the whole interval lies on the harmless side of a paper-sized effect (direction·hi < effect,
      i.e. for a drop lo > −effect): equivalence within the paper's effect size;
    * not replicated: the interval excludes 0 on the harmful side (a change in the claimed-absent direction is
      detected);
    * inconclusive otherwise or when a gate fails."""
    point, lo, hi, effect, s_lo, s_hi, m, failed = _gate("decide_null", stat, effect, direction, margin, f1_ci,
                                                         k, model)
    txt = f"{measure} = {_fmt(point, lo, hi)}"
    bound = -effect if direction < 0 else effect
    if failed:
        return Verdict(INCONCLUSIVE, point, (lo, hi), f"{txt}; inconclusive because {failed}", failed,
                       claim=claim, measure=measure, paper=paper, mde=m, model=model)
    if s_hi < effect:
        word, reason = REPLICATED, f"the whole interval is on the near side of a paper-sized change ({bound:+.3f})"
    elif s_lo > 0:
        word, reason = NOT_REPLICATED, f"the interval excludes 0: a {'drop' if direction < 0 else 'rise'} is detected"
    else:
        word, reason = INCONCLUSIVE, f"the interval includes both 0 and a paper-sized change ({bound:+.3f})"
    return Verdict(word, point, (lo, hi), f"{txt}: {reason}", reason, claim=claim, measure=measure, paper=paper,
                   mde=m, model=model)


def decide_bell(rise, fall, effect: float, *, f1_ci=None, k: int | None = None, margin: float | None = None,
                peak: str = "the peak", claim: str = "", paper: str = "", model: str = "the model") -> Verdict:
    """Shape claim "a bell with its peak at ``peak``" (fixed before the data; no peak-picking). ``rise`` =
    F1(peak) − F1(lowest rate), ``fall`` = F1(peak) − F1(highest rate), each (point, lo, hi) from a paired
    bootstrap. Gates: ``f1_ci`` (the model's macro-F1 interval at the peak) above chance by max(CHANCE_MARGIN,
    effect) (room for a paper-sized fall), and power for BOTH sides.

    * replicated: both intervals lie above 0 (intersection-union test, no correction needed);
    * not replicated: either interval lies below ``effect`` (that side of the bell is excluded at paper size);
    * inconclusive otherwise. The deciding statistic is the smaller of rise and fall."""
    r, f = _interval(rise), _interval(fall)
    effect = abs(float(effect))
    gates = [Gate(g.ok or x[1] > effect or x[2] < 0, f"{side}: {g.text}")   # a side settled by its interval
             for x, side in ((r, "rise"), (f, "fall")) for g in [powered(x[1:], effect)]]
    if f1_ci is not None:   # a bell needs room for a paper-sized fall above chance
        gates.insert(0, above_chance(f1_ci, k, max(CHANCE_MARGIN, effect) if margin is None else margin, model))
    decisive = r if r[1] <= f[1] else f     # the weaker side decides
    m = max(mde(r[1:]), mde(f[1:]))
    txt = f"rise to {peak} {_fmt(*r)}, fall after it {_fmt(*f)}"
    measure = f"min(rise, fall) around {peak}"
    failed = _gated(gates)
    if failed:
        return Verdict(INCONCLUSIVE, decisive[0], decisive[1:], f"{txt}; inconclusive because {failed}", failed,
                       claim=claim, measure=measure, paper=paper, mde=m, model=model)
    if r[1] > 0 and f[1] > 0:
        word, reason = REPLICATED, "both the rise and the fall lie above 0"
    elif r[2] < effect or f[2] < effect:
        side = "rise" if r[2] < effect else "fall"
        word, reason = NOT_REPLICATED, f"the {side} excludes a paper-sized change ({effect:.3f})"
    else:
        word, reason = INCONCLUSIVE, "an interval includes both 0 and a paper-sized change"
    return Verdict(word, decisive[0], decisive[1:], f"{txt}: {reason}", reason, claim=claim, measure=measure,
                   paper=paper, mde=m, model=model)


def not_evaluated(reason: str, claim: str = "", paper: str = "", model: str = "") -> Verdict:
    """An inconclusive verdict for a claim that could not be measured (e.g. a model role was skipped)."""
    return Verdict(INCONCLUSIVE, float("nan"), (float("nan"), float("nan")), f"not evaluated: {reason}", reason,
                   claim=claim, paper=paper, model=model)


# ------------------------------------------------------------------------------------------ rules on the table
def change(pred, model: str, base, other, effect: float, *, expect: str = "effect", direction: int = -1,
           claim: str = "", paper: str = "", stat: str = "macro_f1") -> Verdict:
    """Rule on a :class:`emoprobe.chapter.Predictions`: the paired change ``stat(other) − stat(base)`` of
    ``model`` (conditions or lists of conditions, averaged). ``expect="effect"``: the claim is a change of at
    least ``effect`` with sign ``direction`` (:func:`decide_effect`); ``expect="none"``: the claim is that no
    paper-sized change happens (:func:`decide_null`). The chance gate uses the model's macro-F1 in ``base``."""
    if expect not in ("effect", "none"):
        raise ValueError(f"expect must be 'effect' or 'none', got {expect!r}")
    d = pred.diff(model, base, other, stat=stat)
    kw = dict(direction=direction, f1_ci=pred.f1(model, base), k=pred.k, claim=claim, paper=paper, model=model,
              measure=f"Δ {_STAT_NAMES.get(stat, stat)} ({_name(other)} − {_name(base)})")
    return decide_effect(d, effect, **kw) if expect == "effect" else decide_null(d, effect, **kw)


def effect_of(pred, model: str, stat, effect: float, *, condition="test", direction: int = +1, measure: str = "",
              claim: str = "", paper: str = "") -> Verdict:
    """:func:`decide_effect` for any statistic ``stat`` = (point, lo, hi) about ``model`` (e.g. a bootstrapped
    correlation or a paired tail-F1 change from a :class:`emoprobe.chapter.Predictions`), gated on the model's
    macro-F1 under ``condition`` in ``pred``."""
    return decide_effect(stat, effect, direction=direction, f1_ci=pred.f1(model, condition), k=pred.k,
                         measure=measure, claim=claim, paper=paper, model=model)


def bell(pred, model: str, low, peak, high, effect: float, *, claim: str = "", paper: str = "") -> Verdict:
    """Rule on a :class:`emoprobe.chapter.Predictions`: :func:`decide_bell` with rise = F1(peak) − F1(low) and
    fall = F1(peak) − F1(high) (paired bootstraps on the same clips), gated on the model's macro-F1 at
    ``peak``."""
    rise = pred.diff(model, low, peak)
    fall = pred.diff(model, high, peak)
    return decide_bell(rise, fall, effect, f1_ci=pred.f1(model, peak), k=pred.k, peak=_name(peak), claim=claim,
                       paper=paper, model=model)


_STAT_NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy"}


def _name(cond) -> str:
    if isinstance(cond, (list, tuple)):
        return f"mean of {', '.join(map(str, cond))}" if len(cond) > 1 else str(cond[0])
    return str(cond)


def table(verdicts: dict) -> "pd.DataFrame":  # noqa: F821
    """A DataFrame of verdicts (index = the dict's keys): claim, model, paper, ours, word, reason."""
    import pandas as pd

    return pd.DataFrame({k: {"claim": v.claim, "model": v.model, "paper": v.paper,
                             "ours [95% CI]": v.ours, "minimum detectable": round(v.mde, 3) if v.mde == v.mde
                             else None, "verdict": v.word, "reason": v.reason}
                         for k, v in verdicts.items()}).T


# ------------------------------------------------------------------------------------------ two-sided and families
def decide_change(stat, effect: float, *, f1_ci=None, k: int | None = None, margin: float | None = None,
                  measure: str = "the change", claim: str = "", paper: str = "",
                  model: str = "the model") -> Verdict:
    """Claim: a change of paper size in EITHER direction (e.g. "the answer format matters"). Gates as
    :func:`decide_effect` (chance margin :data:`CHANCE_MARGIN` unless given).

    * replicated: the interval excludes 0 (on either side: the two-sided test at level ALPHA);
    * not replicated: the whole interval lies within ±``effect`` (no paper-sized change either way);
    * inconclusive otherwise or when a gate fails."""
    point, lo, hi = _interval(stat)
    effect = abs(float(effect))
    if effect <= 0:
        raise ValueError("decide_change: effect (the paper-sized effect) must be non-zero")
    gates = [] if lo > effect or hi < -effect else [powered((lo, hi), effect)]   # resolved: no power needed
    if f1_ci is not None:
        gates.insert(0, above_chance(f1_ci, k, CHANCE_MARGIN if margin is None else margin, model))
    m = mde((lo, hi))
    txt = f"{measure} = {_fmt(point, lo, hi)}"
    failed = _gated(gates)
    if failed:
        return Verdict(INCONCLUSIVE, point, (lo, hi), f"{txt}; inconclusive because {failed}", failed,
                       claim=claim, measure=measure, paper=paper, mde=m, model=model)
    if lo > 0 or hi < 0:
        word, reason = REPLICATED, "the interval excludes 0"
    elif -effect < lo and hi < effect:
        word, reason = NOT_REPLICATED, f"the whole interval lies within ±{effect:.3f} (no paper-sized change)"
    else:
        word, reason = INCONCLUSIVE, f"the interval includes both 0 and a paper-sized change (±{effect:.3f})"
    return Verdict(word, point, (lo, hi), f"{txt}: {reason}", reason, claim=claim, measure=measure, paper=paper,
                   mde=m, model=model)


def bonferroni(stat, n: int, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(point, lo, hi) of a (1 − alpha) interval widened to the Bonferroni level 1 − alpha/n (normal
    approximation from the interval's standard error): one look among ``n`` keeps the family's error at alpha."""
    point, lo, hi = _interval(stat)
    half = _z(1 - alpha / (2 * int(n))) * standard_error((lo, hi), alpha)
    return point, point - half, point + half


def decide_family(stats: dict, effect: float, *, expect: str = "none", direction: int = +1, f1_ci=None,
                  k: int | None = None, margin: float | None = None, measure: str = "the change",
                  claim: str = "", paper: str = "", model: str = "the model") -> Verdict:
    """One claim about a whole family of comparisons (e.g. "no visual prompt improves recognition", one paired
    change per prompt: ``stats`` = {member: (point, lo, hi)}). Each member's 95% interval is widened to the
    Bonferroni level (:func:`bonferroni`, n = number of members) and decided with :func:`decide_null`
    (``expect="none"``) or :func:`decide_effect` (``expect="effect"``); then

    * replicated: every member is replicated (an intersection-union test; the widening only makes it stricter);
    * not replicated: at least one member is not replicated — the widening corrects for picking it among n;
    * inconclusive otherwise, with the members that decided it. The deciding statistic is the member whose
      interval lies closest to contradicting the claim (largest upper bound for a no-rise claim)."""
    if expect not in ("effect", "none"):
        raise ValueError(f"expect must be 'effect' or 'none', got {expect!r}")
    if not stats:
        return not_evaluated("no comparison in the family", claim=claim, paper=paper, model=model)
    rule = decide_null if expect == "none" else decide_effect
    n = len(stats)
    members = {name: rule(bonferroni(s, n), effect, direction=direction, f1_ci=f1_ci, k=k, margin=margin,
                          measure=f"{measure}: {name}", model=model) for name, s in stats.items()}
    words = {name: v.word for name, v in members.items()}
    # the member nearest to contradicting the claim: for "no rise" the largest upper bound, for "no drop" the
    # smallest lower bound (and the mirror for an effect claim)
    signed = {name: (v.interval[1] if direction > 0 else -v.interval[0]) for name, v in members.items()}
    key = max(signed, key=signed.get) if expect == "none" else min(signed, key=signed.get)
    if any(w == NOT_REPLICATED for w in words.values()):
        word = NOT_REPLICATED
        key = next(nm for nm, w in words.items() if w == NOT_REPLICATED)
        reason = f"{key}: {members[key].reason} (Bonferroni-corrected for {n} comparisons)"
    elif all(w == REPLICATED for w in words.values()):
        word = REPLICATED
        reason = f"all {n} comparisons: {members[key].reason.replace('the whole interval', 'every interval')} " \
                 f"(Bonferroni-widened intervals; the nearest is {key})"
    else:
        word = INCONCLUSIVE
        open_ = [nm for nm, w in words.items() if w == INCONCLUSIVE]
        reason = f"{', '.join(open_)}: {members[open_[0]].reason}"
    v = members[key]
    return Verdict(word, v.statistic, v.interval, f"{measure} over {n} comparisons, nearest {key} "
                   f"{_fmt(v.statistic, *v.interval)} (Bonferroni-widened): {reason}", reason, claim=claim,
                   measure=f"{measure} ({key}, Bonferroni ×{n})", paper=paper, mde=v.mde, model=model,
                   extra={"members": {nm: [mv.word, mv.statistic, *mv.interval] for nm, mv in members.items()}})
