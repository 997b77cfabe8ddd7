"""The transcribed paper tables (data/reference) are internally consistent, and their loader validates."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from emoprobe import labels as L
from emoprobe import reference as R

ROUND_TOL = 0.002  # beyond this a disagreement must be listed in known_discrepancies.csv


@pytest.fixture(scope="module")
def t():
    return {n: R.load(n) for n in R.names()}


def _known(t, check):
    k = t["known_discrepancies"]
    return k[k.check == check]


def test_all_tables_load_and_shapes(t):
    assert len(t["table1_correlations"]) == 16
    assert len(t["table2_shuffle"]) == 40  # 10 models x 2 conditions x 2 datasets
    assert len(t["table3_msce"]) == 12
    assert len(t["tableS1_visual_prompting"]) == 8
    assert len(t["tableS2S3_per_class_f1"]) == 20 * 11 + 20 * 7
    assert len(t["tableS2S3_macro_f1"]) == 40
    for ds in ("mafw", "dfew"):
        sub = t["tableS2S3_per_class_f1"].query("dataset == @ds")
        assert set(sub.label) == set(L.get(ds))
        assert sub.groupby(["model", "condition"]).size().eq(len(L.get(ds))).all()


def test_macro_f1_is_mean_of_per_class(t):
    pc = t["tableS2S3_per_class_f1"]
    mean = pc.groupby(["dataset", "model", "condition"]).f1.mean().rename("mean").reset_index()
    m = mean.merge(t["tableS2S3_macro_f1"], validate="one_to_one")
    assert len(m) == 40
    m["diff"] = (m["mean"] - m.macro_f1).abs()
    known = _known(t, "macro_f1_vs_per_class")
    bad = m[m["diff"] > ROUND_TOL]
    assert set(zip(bad.dataset, bad.model, bad.condition)) == set(zip(known.dataset, known.model, known.condition))
    # the paper's own rounding: per-class to 3 decimals, macro to 4 -> |diff| <= 0.0005 + 0.00005
    assert m.loc[m["diff"] <= ROUND_TOL, "diff"].max() <= 0.00055


def test_table2_f1_equals_tableS2S3_macro(t):
    m = t["table2_shuffle"].merge(t["tableS2S3_macro_f1"], on=["dataset", "model", "condition"], validate="1:1")
    assert len(m) == 40
    np.testing.assert_allclose(m.f1, m.macro_f1, atol=1e-12)


def test_table3_baseline_equals_table2_original(t):
    base = t["table3_msce"].query("condition == 'baseline'")
    m = base.merge(t["table2_shuffle"].query("condition == 'original'"), on=["model", "dataset"],
                   suffixes=("", "_t2"), validate="1:1")
    assert len(m) == 6
    for c in ("precision", "recall", "f1"):
        np.testing.assert_allclose(m[c], m[c + "_t2"], atol=1e-12)


def test_tableS1_baseline_and_msce_match_tables_2_and_3(t):
    s1 = t["tableS1_visual_prompting"].set_index("method")
    t2 = t["table2_shuffle"].query("model == 'qwen2.5-vl' and dataset == 'mafw' and condition == 'original'")
    t3 = t["table3_msce"].query("model == 'qwen2.5-vl' and dataset == 'mafw' and condition == 'msce'")
    for c in ("precision", "recall", "f1"):
        assert s1.loc["baseline", c] == t2[c].item()
        assert s1.loc["msce", c] == t3[c].item()
    # the caption's claim: every visual modification lowers F1 below the baseline
    visual = s1.drop(index=["baseline", "msce"])
    assert (visual.f1 < s1.loc["baseline", "f1"]).all()


def test_table1_symmetric_and_p_consistent_with_n11(t):
    t1 = t["table1_correlations"]
    r = t1.pivot(index="row", columns="col", values="r")
    np.testing.assert_array_equal(r.to_numpy(), r.to_numpy().T)
    assert (np.diag(r.to_numpy()) == 1).all()
    p = t1.pivot(index="row", columns="col", values="p")
    assert np.isnan(np.diag(p.to_numpy())).all()
    np.testing.assert_array_equal(p.fillna(-1).to_numpy(), p.fillna(-1).to_numpy().T)
    # two-tailed t-test p of Pearson r with n = 11 classes reproduces the printed p to its 4 decimals
    off = t1[t1.row != t1.col]
    tt = off.r * np.sqrt(9 / (1 - off.r ** 2))
    np.testing.assert_allclose(2 * stats.t.sf(tt, 9), off.p, atol=6e-5)


def test_table1_model_model_r_vs_tableS2(t):
    """Table 1's Gemini-vs-Qwen2.5-VL r does not follow from Table S2's per-class F1 (documented)."""
    g = R.per_class_f1("mafw", "gemini-2.5-flash")
    q = R.per_class_f1("mafw", "qwen2.5-vl")
    r = stats.pearsonr(g, q).statistic
    k = _known(t, "table1_vs_tableS2")
    assert len(k) == 1 and float(k.expected.item()) == pytest.approx(r, abs=5e-5)
    t1 = t["table1_correlations"].query("row == 'gemini-2.5-flash' and col == 'qwen2.5-vl'")
    assert float(k.reported.item()) == t1.r.item()


def test_recall_multiple_of_one_over_n(t):
    """Balanced test sets (45/class MAFW, 100/class DFEW): macro recall = correct / n, up to 4-decimal rounding.
    Rows where this fails are listed in known_discrepancies.csv."""
    n = {"mafw": 495, "dfew": 700}
    found = set()
    for name, key in (("table2_shuffle", "condition"), ("table3_msce", "condition"),
                      ("tableS1_visual_prompting", "method")):
        for _, row in t[name].iterrows():
            k = row.recall * n[row.dataset]
            if abs(k - round(k)) > n[row.dataset] * 5e-5 + 1e-9:
                found.add((name, row.dataset, row.model, row[key]))
    known = _known(t, "recall_multiple_of_1_over_n")
    assert found == set(zip(known.table, known.dataset, known.model, known.condition))


def test_text_values_match_tableS2(t):
    for _, row in t["text_per_class_f1"].iterrows():
        table = R.per_class_f1(row.dataset, row.model, "original")[row.label]
        decimals = len(str(row.f1).split(".")[1]) if "." in str(row.f1) else 0
        assert abs(table - row.f1) <= 0.5 * 10 ** -max(decimals, 2) + 1e-9, row.quote
        assert str(row.f1) in row.quote or str(row.f1) + "0" in row.quote


def test_vision_only_drop_claim(t):
    """Sec. 3.4: vision-only models lose 15-16% macro-F1 when frames are shuffled (relative drop)."""
    t2 = t["table2_shuffle"].query("model_kind == 'vision-only'")
    w = t2.pivot_table(index=["model", "dataset"], columns="condition", values="f1")
    drop = 1 - w.shuffled / w.original
    assert drop.between(0.145, 0.165).all()


def test_fps_claims(t):
    f = t["fps_claims"]
    grid = f.query("claim == 'fps_grid'").value.unique()
    assert list(grid) == ["1;5;10;15;20;25"]
    assert set(f.query("claim == 'peak_fps'").value) == {"5"}


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        R.load("table2_shuffle", path=tmp_path / "nope.csv")
    with pytest.raises(KeyError):
        R.load("table99")
    bad = tmp_path / "t2.csv"
    bad.write_text("model,condition,dataset,precision,recall,f1\nqwen2.5-vl,original,mafw,0.1,0.2,0.3\n")
    with pytest.raises(ValueError, match="model_kind"):
        R.load("table2_shuffle", path=bad)
    bad.write_text("model,condition,dataset,precision,recall,f1,model_kind\nqwen2.5-vl,original,mafw,x,0.2,0.3,vlm\n")
    with pytest.raises(ValueError, match="non-numeric"):
        R.load("table2_shuffle", path=bad)
    bad.write_text("model,condition,dataset,precision,recall,f1,model_kind\ngpt,original,mafw,0.1,0.2,0.3,vlm\n")
    with pytest.raises(ValueError, match="unexpected value"):
        R.load("table2_shuffle", path=bad)


def test_per_class_f1_and_models():
    s = R.per_class_f1("dfew", "Qwen2.5-Omni", "shuffled")
    assert list(s.index) == list(L.DFEW) and s["surprise"] == pytest.approx(0.32)
    with pytest.raises(KeyError):
        R.per_class_f1("mafw", "qwen2.5-vl", "msce")
    pm = R.paper_models()
    assert pm["qwen2.5-vl"]["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert pm["gemini-2.5-flash"]["backend"] == "openai"
    assert pm["emotionqwen"]["model"] is None and "user-supplied" in pm["emotionqwen"]["note"]
    assert set(pm) == set(R.PAPER_NAMES) == set(R.load("table2_shuffle").model)


def test_readme_lists_every_table():
    readme = (R._dir() / "README.md").read_text()
    for n in R.names():
        assert f"`{n}.csv`" in readme, f"data/reference/README.md does not describe {n}.csv"
    on_disk = {p.stem for p in R._dir().glob("*.csv")}
    assert on_disk == set(R.names()), f"CSV files without a loader entry (or vice versa): {on_disk ^ set(R.names())}"


def test_prompt_sensitivity_004(t):
    ps = t["prompt_sensitivity_004"]
    assert (ps.source == "arXiv:2502.05660").all()
    f1 = ps[(ps.claim == "zero_shot_f1") & (ps.dataset == "eve-datasets")].set_index(["model", "bound"]).value
    assert f1[("gpt-4o", "max")] == 0.635 and f1[("gpt-4o", "min")] == 0.503
    assert f1[("open-source", "max")] == 0.593 and f1[("open-source", "min")] == 0.401
    assert ps.query("claim == 'persona_f1_drop'").value.item() == 0.5


def test_fps_claim_reads_one_row_and_names_a_missing_one():
    import pytest

    from emoprobe import reference

    assert reference.fps_claim("fig4", "Qwen2.5-VL", "peak_fps") == "5"
    with pytest.raises(KeyError, match="no fps claim"):
        reference.fps_claim("fig4", "qwen2.5-vl", "no_such_claim")
