"""Two-sided and family-wise decision rules (verdicts.decide_change, bonferroni, decide_family) on numbers with
known answers."""
from __future__ import annotations

import pytest

from emoprobe import verdicts as V

K = 11
STRONG = (0.60, 0.55, 0.65)      # macro-F1 clearly above chance 1/11
AT_CHANCE = (0.10, 0.05, 0.15)


def test_decide_change_is_two_sided():
    assert V.decide_change((0.10, 0.08, 0.12), 0.05, f1_ci=STRONG, k=K).word == V.REPLICATED
    assert V.decide_change((-0.10, -0.12, -0.08), 0.05, f1_ci=STRONG, k=K).word == V.REPLICATED
    assert V.decide_change((0.00, -0.03, 0.03), 0.05, f1_ci=STRONG, k=K).word == V.NOT_REPLICATED
    assert V.decide_change((0.02, -0.03, 0.07), 0.05, f1_ci=STRONG, k=K).word == V.INCONCLUSIVE
    at_chance = V.decide_change((0.10, 0.08, 0.12), 0.05, f1_ci=AT_CHANCE, k=K)
    assert at_chance.word == V.INCONCLUSIVE and "chance" in at_chance.reason
    small = V.decide_change((0.10, -0.20, 0.40), 0.05, f1_ci=STRONG, k=K)   # far too wide: underpowered
    assert small.word == V.INCONCLUSIVE and "smallest effect" in small.reason


def test_bonferroni_widens_by_the_right_factor():
    p, lo, hi = V.bonferroni((0.0, -1.96, 1.96), 6)   # SE 1
    assert p == 0 and hi == pytest.approx(2.638, abs=1e-3) and lo == pytest.approx(-hi)
    assert V.bonferroni((0.1, 0.0, 0.2), 1) == pytest.approx((0.1, 0.0, 0.2))


def test_family_no_rise_claim():
    tight_down = {f"p{i}": (-0.02, -0.03, -0.01) for i in range(6)}
    v = V.decide_family(tight_down, 0.05, expect="none", direction=+1, f1_ci=STRONG, k=K, model="M")
    assert v.word == V.REPLICATED and "Bonferroni" in v.reason
    # one member improves clearly even after the correction -> not replicated, and it is the deciding one
    fam = dict(tight_down, winner=(0.20, 0.19, 0.21))
    v = V.decide_family(fam, 0.05, expect="none", direction=+1, f1_ci=STRONG, k=K)
    assert v.word == V.NOT_REPLICATED and "winner" in v.reason and v.statistic == pytest.approx(0.20)
    # a member just above 0 at 95% is not enough among 7 looks
    fam = dict(tight_down, lucky=(0.012, 0.003, 0.021))
    assert V.decide_family(fam, 0.05, expect="none", direction=+1, f1_ci=STRONG, k=K).word != V.NOT_REPLICATED
    # a model at chance decides nothing
    v = V.decide_family(fam, 0.05, expect="none", direction=+1, f1_ci=AT_CHANCE, k=K)
    assert v.word == V.INCONCLUSIVE and "chance" in v.reason
    assert V.decide_family({}, 0.05).word == V.INCONCLUSIVE
    with pytest.raises(ValueError):
        V.decide_family(fam, 0.05, expect="maybe")


def test_decide_change_needs_no_power_beyond_a_paper_sized_change():
    wide_but_far = V.decide_change((0.40, 0.10, 0.70), 0.05, f1_ci=STRONG, k=K)
    assert wide_but_far.word == V.REPLICATED
    assert V.decide_change((-0.40, -0.70, -0.10), 0.05, f1_ci=STRONG, k=K).word == V.REPLICATED
