"""Training recipes, captions and the committed embedded checkpoints (fast: a few steps on tiny data)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emoprobe import captions, cards, labels, models, paths, prompts, sampling, train, vision
from emoprobe import train_data as D, train_loops as TL, train_recipe as R
from emoprobe.models import ClassifyRequest, DescribeRequest, ModelError

MAFW = list(labels.MAFW)


@pytest.fixture(scope="module")
def tiny_df():
    from emoprobe import synthfer

    return synthfer.dataset("mafw", "train", n_total=44)


# ------------------------------------------------------------------------------------------------ captions
def test_word_probs_equal_totals_and_order():
    lex = captions.word_probs(MAFW, "lexical")
    uni = captions.word_probs(MAFW, "uniform")
    assert sum(lex.values()) == pytest.approx(sum(uni.values()))
    assert max(lex.values()) == pytest.approx(captions.P_MAX)
    assert len(set(uni.values())) == 1
    from wordfreq import word_frequency

    order = sorted(MAFW, key=lambda l: word_frequency(l, "en"))
    assert [lex[l] for l in order] == sorted(lex.values())
    with pytest.raises(captions.CaptionError):
        captions.word_probs(MAFW, "zipf")


def _strip_emotion(text: str, label: str) -> list[str]:
    w = captions.emotion_word(label)
    return [p for p in text.split(". ") if w not in p]


def test_corpora_differ_only_in_emotion_words(tiny_df):
    from emoprobe import synthfer

    lex = captions.word_probs(MAFW, "lexical")
    uni = captions.word_probs(MAFW, "uniform")
    n_diff = 0
    for i, row in tiny_df.head(20).iterrows():
        gt = synthfer.load_gt(row)
        a = captions.caption(row, gt, np.random.default_rng(i), lex)
        b = captions.caption(row, gt, np.random.default_rng(i), uni)
        assert a == captions.caption(row, gt, np.random.default_rng(i), lex)          # deterministic
        assert _strip_emotion(a, row["label"]) == _strip_emotion(b, row["label"])     # same other words
        n_diff += a != b
    assert n_diff > 0   # the emotion word does differ somewhere
    # never leaks the recipe variant
    for _, row in tiny_df.head(20).iterrows():
        assert json.loads(row["identity"])["variant"] not in " ".join(captions.appearance_words(row))


def _gt(T=50, fps=25.0):
    from emoprobe import synthfer

    return {"t": np.arange(T) / fps, "au": np.zeros((T, len(synthfer.AU_NAMES)), np.float32),
            "au_names": list(synthfer.AU_NAMES), "head": np.zeros((T, 3), np.float32)}


def test_motion_summary_rules():
    from emoprobe import synthfer

    gt = _gt()
    assert captions.motion_summary(gt, 0, 2) == "the face stays still"
    assert captions.regions_moved(gt, 0, 2) == set()
    j = list(synthfer.AU_NAMES).index("AU12")
    gt["au"][:, j] = np.clip((gt["t"] - 0.2) / 0.4, 0, 1) * 0.8         # lip corners rise early, strongly
    s = captions.motion_summary(gt, 0, 2)
    assert s == captions.motion_summary(gt, 0, 2)
    assert s.startswith("lip corners pull up strongly early"), s
    assert captions.regions_moved(gt, 0, 2) == {"lip corners"}
    assert captions.regions_in_text(s) == {"lip corners"}
    k = list(synthfer.AU_NAMES).index("AU4")
    gt["au"][:, k] = np.exp(-((gt["t"] - 1.0) / 0.1) ** 2) * 0.4         # brief brow movement midway
    s = captions.motion_summary(gt, 0, 2)
    assert "brows lower and draw together moderately midway then relax" in s, s
    assert captions.regions_moved(gt, 0, 2) == {"lip corners", "brows"}
    ch = captions.region_changes(gt, 0, 2)                                # the magnitudes behind the words
    assert ch["lip corners"] == pytest.approx(0.8, abs=0.01) and ch["brows"] == pytest.approx(0.4, abs=0.02)
    assert captions.regions_moved(gt, 1.5, 2) == set()                    # window restricts
    with pytest.raises(captions.CaptionError):
        captions.motion_summary(gt, 1.0, 1.0)


# ------------------------------------------------------------------------------------------------ training
def _decreasing(losses):
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def test_vision_few_steps_fixed_batch(tiny_df):
    torch.manual_seed(0)
    cfg = dict(vision.DEFAULT_CONFIG, labels=MAFW)
    X = D.vision_cache(tiny_df.head(8), cfg)
    y = torch.as_tensor([MAFW.index(l) for l in tiny_df.head(8)["label"]])
    m = vision.build(cfg, len(MAFW))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    x = D.vision_batch(X, np.arange(8), None, cfg)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    _decreasing(losses)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from emoprobe import tiny

    out = tmp_path_factory.mktemp("vlm")
    return tiny.build_qwen2_5_vl(out / "m", corpus=[prompts.render("paper", MAFW), prompts.DESCRIBE["motion"],
                                                      *MAFW] * 5, vocab_size=600, seed=0)


def test_microvlm_few_steps_fixed_batch(tiny_vlm, tiny_df):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)
    ex = []
    for _, row in tiny_df.head(2).iterrows():
        fr, t = D.frames_for(row["path"], ("count", 4))
        ex.append(D.Example(fr, t, prompts.render("paper", MAFW), row["label"]))
    batch = D.make_batch(proc, ex)
    n_ans = (batch["labels"] != -100).sum(1)
    assert (n_ans >= 2).all()            # label tokens + end of turn, nothing else
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(5):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    _decreasing(losses)


def test_vision_targets_and_stage0_few_steps(tiny_vlm, tiny_df, tmp_path, monkeypatch):
    """Stage 0 regresses landmarks (as fractions of the frame) + AU intensities; no label enters; weights move."""
    import pandas as pd
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from emoprobe import synthfer

    row = tiny_df.iloc[0]
    gt = synthfer.load_gt(row)
    y = D.vision_targets(gt, float(row["size"]))
    assert y.shape == (len(gt["t"]), 26 * 2 + len(gt["au_names"]))
    assert 0 < y[:, :52].min() and y[:, :52].max() < 1        # landmarks inside the frame
    torch.manual_seed(0)
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)
    before = {n: p.detach().clone() for n, p in model.model.visual.named_parameters()}
    data = D.MicroData(tiny_df, tiny_df, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))
    log = TL.CsvLog(tmp_path / "log.csv")
    TL.pretrain_vision_tower(model, proc, data, 3, "cpu", 0, log, "t", 0.0, clips=tiny_df.head(6))
    log.close()
    rows = pd.read_csv(tmp_path / "log.csv")
    assert list(rows["stage"]) == ["vision"] and np.isfinite(rows[["loss", "landmark_rmse_px"]].values).all()
    moved = [n for n, p in model.model.visual.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("blocks.") for n in moved) and any(n.startswith("patch_embed") for n in moved)

    # MicroVLM and its uniform control share stage 0 (no words in it): the second run reuses the first's tower
    def fresh():
        torch.manual_seed(0)
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)

    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    a, b = fresh(), fresh()
    la, lb = TL.CsvLog(tmp_path / "a.csv"), TL.CsvLog(tmp_path / "b.csv")
    TL.stage0_cached(a, proc, data, 2, "cpu", 0, la, "a", 0.0, tiny_df.head(6))
    assert len(list((tmp_path / "cache" / "train").glob("stage0_*.safetensors"))) == 1
    TL.stage0_cached(b, proc, data, 2, "cpu", 0, lb, "b", 0.0, tiny_df.head(6))
    la.close(), lb.close()
    sa, sb = a.model.visual.state_dict(), b.model.visual.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert pd.read_csv(tmp_path / "a.csv")["loss"].tolist() == pd.read_csv(tmp_path / "b.csv")["loss"].tolist()
    TL.stage0_cached(fresh(), proc, data, 3, "cpu", 0, TL.CsvLog(tmp_path / "c.csv"), "c", 0.0, tiny_df.head(6))
    assert len(list((tmp_path / "cache" / "train").glob("stage0_*.safetensors"))) == 2   # other steps: new key


def test_lora_balanced_few_steps(tiny_vlm, tiny_df, tmp_path):
    meta = TL.lora_balanced(tiny_vlm, tiny_df, 1, tmp_path / "lora", steps=3, seed=0, batch_size=2)
    assert meta["targets"] == ["q_proj", "v_proj"] and meta["clips"] == len(MAFW)
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "lora" / "config.json").exists()            # merged checkpoint (small model)
    import pandas as pd

    log = pd.read_csv(tmp_path / "lora" / "train_log.csv")
    assert np.isfinite(log["loss"]).all()
    with pytest.raises(R.TrainError):
        TL.lora_balanced(tiny_vlm, tiny_df, 10**6, tmp_path / "x", steps=1)


def test_video_fps_matches_hf_convention():
    from emoprobe import hf

    for t in (np.array([0.0]), np.arange(8) / 4.0, np.array([0, 0.24, 0.52, 0.76, 1.0]), np.array([0.5, 0.0, 1.0])):
        assert D.video_fps(t) == pytest.approx(hf.sampling_fps(t))


def test_per_class_errors():
    import pandas as pd

    df = pd.DataFrame({"clip_id": ["a", "b"], "path": ["x", "y"], "label": ["anger", "fear"]})
    with pytest.raises(R.TrainError, match="too few"):
        D.per_class(df, 1, 0, "t")


# ------------------------------------------------------------------------------------------------ committed checkpoints
def _committed(name: str, marker: str):
    p = paths.models() / name
    if not (p / marker).exists():
        pytest.skip(f"checkpoint data/models/{name} not committed yet (no {marker})")
    return p


@pytest.mark.parametrize("name", ["vision3d", "vision3d-balanced"])
def test_committed_vision_checkpoint(name, tiny_df):
    p = _committed(name, "README.md")
    b = models.load({"backend": "vision", "model": str(p.relative_to(paths.root()))})
    fr = sampling.sample(tiny_df["path"].iloc[0], strategy="fps", fps=5)
    a = b.classify([ClassifyRequest(frames=fr.frames, t=fr.t, labels=MAFW, prompt="")])[0]
    assert a.status == "ok" and a.label in MAFW and sum(a.scores.values()) == pytest.approx(1, abs=1e-5)
    # any frame count, shuffled or not
    sh = sampling.shuffle(fr, 1)
    assert b.classify([ClassifyRequest(frames=sh.frames[:3], t=sh.t[:3], labels=MAFW, prompt="")])[0].status == "ok"
    assert len(b.fingerprint()["weights_sha256"]) == 64
    with pytest.raises(ModelError):
        b.describe([DescribeRequest(frames=fr.frames, t=fr.t, prompt="x")])


@pytest.mark.parametrize("name", ["microvlm", "microvlm-uniform", "microvlm-lora-balanced"])
def test_committed_microvlm_checkpoint(name, tiny_df):
    _committed(name, "README.md")
    b = models.load({"backend": "hf", "model": f"data/models/{name}"})
    fr = sampling.sample(tiny_df["path"].iloc[0], strategy="count", count=8)
    a = b.classify([ClassifyRequest(frames=fr.frames, t=fr.t, labels=MAFW, prompt=prompts.render("paper", MAFW))])[0]
    assert a.status in ("ok", "unparsed") and a.text


def test_plot_training_script(tmp_path):
    """scripts/plot_training.py draws one row per stage from a model folder's train_log.csv."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("plot_training", paths.root() / "scripts" / "plot_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.plot(tmp_path) is None                          # no log: nothing drawn
    rows = [dict(model="m", stage="vision", step=s, loss=1 / s, landmark_rmse_px=3 / s) for s in (50, 100)]
    rows += [dict(model="m", stage="instruct", step=s, loss=2 / s, val_macro_f1=0.1 * s / 100) for s in (100, 200)]
    pd.DataFrame(rows).to_csv(tmp_path / "train_log.csv", index=False)
    fig = mod.plot(tmp_path)
    assert fig.axes[0].get_xlabel() == "vision step" and fig.axes[1].get_ylabel() == "landmark RMSE (px)"
    assert fig.axes[3].get_ylabel() == "validation macro-F1"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_two_chains_order_and_failures(monkeypatch):
    """--all --jobs 2: microvlm -> lora and vision3d -> microvlm-uniform as child processes; a failed link stops
    its chain (later links depend on it) and the run exits 1."""
    import subprocess
    import threading

    calls, lock = [], threading.Lock()

    def fake_run(cmd, *a, **k):
        name = cmd[cmd.index("--only") + 1]
        with lock:
            calls.append(name)
        assert cmd[cmd.index("--threads") + 1] == "1" and cmd[cmd.index("--seed") + 1] == "3"
        return subprocess.CompletedProcess(cmd, 1 if name == "vision3d" else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert train.main(["--all", "--jobs", "2", "--seed", "3"]) == 1
    assert sorted(calls) == ["microvlm", "microvlm-lora", "vision3d"]          # uniform skipped after the failure
    assert calls.index("microvlm") < calls.index("microvlm-lora")


def test_stage0_motion_loss_ignores_each_clips_constant_offset():
    """Stage 0 asks for within-clip motion: a per-clip constant (identity, pose) in the landmark targets changes
    neither motion term; the absolute-AU term does see a constant AU offset."""
    g = torch.Generator().manual_seed(0)
    n_lm, d = 4, 6
    norm = {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32), "within": np.full(d, 0.5, np.float32)}
    tgt = torch.randn(7, d, generator=g)
    pred = torch.randn(7, d, generator=g)
    counts = [3, 4]
    base = TL._motion_loss(pred, tgt, counts, norm, n_lm)
    shift = torch.zeros(7, d)
    shift[:3, :n_lm] += 5.0                      # clip 1: a constant landmark offset
    shift[3:, :n_lm] -= 2.0
    moved = TL._motion_loss(pred, tgt + shift, counts, norm, n_lm)
    assert moved[1].item() == pytest.approx(base[1].item(), rel=1e-5)
    assert moved[2].item() == pytest.approx(base[2].item(), rel=1e-5)
    shift_au = torch.zeros(7, d)
    shift_au[:3, n_lm:] += 1.0
    au = TL._motion_loss(pred, tgt + shift_au, counts, norm, n_lm)
    assert au[2].item() == pytest.approx(base[2].item(), rel=1e-5) and au[3].item() != pytest.approx(base[3].item())
    # perfect motion prediction (up to a per-clip constant) gives zero motion loss
    perfect = TL._motion_loss((tgt + shift) / 0.5, tgt, counts, norm, n_lm)
    assert perfect[1].item() < 1e-10 and perfect[2].item() < 1e-10


def test_msce_layout_examples_train_only_the_label(tiny_vlm, tiny_df):
    """Stage 2's MSCE-layout examples go through the HF backend's own input builder (keyframes as images with
    the motion texts between them); only the label + end of turn are trained; video-layout examples are batched
    apart."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_vlm)
    data = D.MicroData(tiny_df, tiny_df, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))
    e = data.msce_example(D.seeded_rng(0, "t"))
    assert e.task == "msce" and len(e.context) == len(e.frames) - 1 and e.answer in MAFW
    b = D.make_batch(proc, [e])
    assert "pixel_values" in b and "pixel_values_videos" not in b
    text = proc.tokenizer.decode(b["input_ids"][0])
    assert "Motion: " + e.context[0] in text and "Frame 2: " in text
    assert proc.tokenizer.decode(b["input_ids"][0][b["labels"][0] != -100]).startswith(e.answer)
    fr, t = D.frames_for(tiny_df["path"].iloc[0], ("count", 4))
    v = D.Example(fr, t, prompts.render("paper", MAFW), tiny_df["label"].iloc[0])
    bs = D.make_batches(proc, [v, e, v])
    assert [x["n_examples"] for x in bs] == [2, 1]
    with pytest.raises(R.TrainError):
        D.make_batch(proc, [v, e])


def test_recipes_switch_and_restore(tiny_vlm, tiny_df, tmp_path):
    """--recipe motion changes only the named constants; committed restores them; the motion stage 0 runs."""
    import pandas as pd
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    base = (R.S0_LOSS, R.CLS_PER_CLASS, R.PRETRAIN_STEPS, dict(R.INSTRUCT_MIX))
    try:
        R.use_recipe("motion")
        assert R.S0_LOSS == "motion" and R.CLS_PER_CLASS is None and "msce" in R.INSTRUCT_MIX
        assert sum(R.INSTRUCT_MIX.values()) == pytest.approx(1.0)
        proc = AutoProcessor.from_pretrained(tiny_vlm)
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)
        data = D.MicroData(tiny_df, tiny_df, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))
        log = TL.CsvLog(tmp_path / "log.csv")
        TL.pretrain_vision_tower(model, proc, data, 2, "cpu", 0, log, "t", 0.0, clips=tiny_df.head(6))
        log.close()
        assert np.isfinite(pd.read_csv(tmp_path / "log.csv")[["loss", "landmark_rmse_px", "au_mse_std"]].values).all()
        tasks = {e.task for step in range(6) for e in data.batch("instruct", step, 8)}
        assert "msce" in tasks
    finally:
        R.use_recipe("v1")
    assert (R.S0_LOSS, R.CLS_PER_CLASS, R.PRETRAIN_STEPS, dict(R.INSTRUCT_MIX)) == base
    with pytest.raises(R.TrainError, match="unknown MicroVLM recipe"):
        R.use_recipe("nope")


def test_video_pixels_equal_processor(tiny_vlm, tiny_df):
    """Stage-0 pixels are built without the processor call, identical to it (odd frame counts included)."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_vlm)
    for choice in (("count", 4), ("count", 8), ("fps", 4.0)):
        vids = [D.frames_for(p, choice)[0] for p in tiny_df["path"].head(3)]
        vids.append(vids[0][:5])
        got = D.video_pixels(proc, vids)
        ref = proc.video_processor(videos=vids, return_tensors="pt")
        assert torch.equal(got["pixel_values_videos"], ref["pixel_values_videos"])
        assert torch.equal(got["video_grid_thw"], ref["video_grid_thw"])


def test_motion_long_recipe_and_stage0_clips(tiny_df, monkeypatch):
    """motion-long sets its stage-0 batch, steps, extra seeds and instruction LR; committed restores them; extra
    stage-0 seeds add whole splits (seeded, no labels read) and never the fresh-seed evaluation split."""
    from emoprobe import synthfer

    base = (R.S0_BATCH, R.VISION_TOWER_STEPS, R.S0_EXTRA_SEEDS, R.INSTRUCT_LR)
    assert D.stage0_clips(tiny_df) is tiny_df
    try:
        R.use_recipe("motion-long")
        assert R.S0_BATCH == 32 and R.S0_EXTRA_SEEDS and 7919 not in R.S0_EXTRA_SEEDS
        assert R.INSTRUCT_LR < base[3] and R.S0_BATCH * R.VISION_TOWER_STEPS > 8 * base[1]
        calls = []
        monkeypatch.setattr(synthfer, "dataset", lambda *a, **k: calls.append(k["seed"]) or tiny_df.head(3))
        clips = D.stage0_clips(tiny_df.head(5))
        assert calls == list(R.S0_EXTRA_SEEDS) and len(clips) == 5 + 3 * len(calls)
        R.S0_EXTRA_SEEDS = (1, 7919)   # use_recipe below restores it
        with pytest.raises(R.TrainError, match="7919"):
            D.stage0_clips(tiny_df)
    finally:
        R.use_recipe("v1")
    assert (R.S0_BATCH, R.VISION_TOWER_STEPS, R.S0_EXTRA_SEEDS, R.INSTRUCT_LR) == base


def test_classify_clips_add_labelled_splits_and_refuse_held_out_seeds(tiny_df, monkeypatch):
    """motion-3splits draws stage 2's classification from the extra labelled train splits (whole splits, in
    order), stage 0 keeps motion-long's settings, and the evaluation / selection seeds are refused."""
    from emoprobe import synthfer

    pool = tiny_df.head(2)
    try:
        R.use_recipe("motion-long")
        assert D.classify_clips(tiny_df, pool, 0) is tiny_df
        R.use_recipe("motion-3splits")
        long = dict(R.RECIPES["motion-long"])
        assert all(getattr(R, k) == v for k, v in long.items() if k not in ("INSTRUCT_STEPS",))
        calls = []
        monkeypatch.setattr(synthfer, "dataset", lambda *a, **k: calls.append(k["seed"]) or tiny_df.head(3))
        got = D.classify_clips(tiny_df.head(5), pool, 0)
        assert calls == [1, 2] and len(got) == 5 + 3 * 2
        assert list(got["clip_id"][:5]) == list(tiny_df.head(5)["clip_id"])
        for bad in (7919, 4242):
            R.CLS_EXTRA_SEEDS = (1, bad)   # use_recipe below restores it
            with pytest.raises(R.TrainError, match=str(bad)):
                D.classify_clips(tiny_df, pool, 0)
    finally:
        R.use_recipe("v1")
    assert R.CLS_EXTRA_SEEDS == ()


def test_committed_microvlms_were_trained_with_the_committed_recipe():
    """The CLI's default recipe (:data:`R.COMMITTED`) is the one the committed MicroVLMs record, with its step
    counts and its classification set (seed-0 train split + the extra labelled splits)."""
    from emoprobe import paths

    rec = R.RECIPES[R.COMMITTED]
    for name in ("microvlm", "microvlm-uniform"):
        meta = json.loads((paths.models() / name / "training.json").read_text())
        assert meta["recipe"] == R.COMMITTED, name
        assert meta["instruct_steps"] == rec["INSTRUCT_STEPS"] and meta["pretrain_steps"] == rec["PRETRAIN_STEPS"]
        assert meta.get("pretrain_merger", True) == rec.get("PRETRAIN_MERGER", R.RECIPE_BASE["PRETRAIN_MERGER"])
        assert meta.get("polish_steps", 0) == rec.get("POLISH_STEPS", 0)
        if meta.get("polish_steps"):
            assert meta["polish_lr"] == rec["POLISH_LR"] and meta["polish_merger"] == rec["POLISH_MERGER"]
        n_extra = len(rec.get("CLS_EXTRA_SEEDS", ()))
        assert meta["cls_clips"] > 3000 * n_extra, (name, meta["cls_clips"])


def test_card_quotes_the_models_own_recipe(tmp_path):
    """A card quotes the constants of the recipe its model was trained with, whatever recipe is in effect, and
    names where a stage-0 tower trained elsewhere came from."""
    d = tmp_path / "microvlm"
    d.mkdir()
    meta = {"name": "microvlm", "mode": "lexical", "recipe": "motion-long", "s0_loss": "motion", "vision_steps": 1500,
            "pretrain_steps": 1000, "instruct_steps": 2500, "word_probs": {}, "instruct_mix": {"classify": 1.0}}
    (d / "training.json").write_text(json.dumps(meta))
    (d / "stage0.json").write_text(json.dumps({"device": "NVIDIA H200", "wall_s": 243, "log": "x.log",
                                               "heldout_within_clip_r2": {"landmark": 0.9, "au": 0.6}}))
    text = cards.write_card(d).read_text()
    assert R.RECIPE == "v1"
    assert "1500 steps of 32 clips" in text and "train splits of seeds [1, 2]" in text and "trained on NVIDIA H200" in text
    assert "lr 0.0003" in text
    (d / "stage0.json").write_text(json.dumps({"tower": "data/towers/t.safetensors", "sha256": "ab" * 32,
                                               "device": "cpu", "wall_s": 2431, "log": "t.csv",
                                               "heldout_within_clip_r2": {"landmark": 0.91, "au": 0.61}}))
    text = cards.write_card(d).read_text()
    assert "loaded from the committed tower `data/towers/t.safetensors`" in text and "trained on cpu" in text
    assert "landmarks 0.91" in text
    meta["recipe"], meta["s0_loss"] = "v1", "absolute"
    (d / "training.json").write_text(json.dumps(meta))
    (d / "stage0.json").unlink()
    text = cards.write_card(d).read_text()
    assert "lr 0.001" in text and "train splits of seeds" not in text and "trained on NVIDIA H200" not in text


# ------------------------------------------------------------------------------------------------ module split
def test_recipe_constants_are_read_at_call_time(tiny_df, monkeypatch, tmp_path):
    """``use_recipe`` rebinds train_recipe's constants at run time, so every reader must look them up there when
    it runs (``R.S0_BATCH``), never copy them at import (``from .train_recipe import S0_BATCH`` would keep the
    committed values under ``--recipe motion-long``). Statically: no module or script imports a constant from
    train_recipe by name. Behaviourally: after ``use_recipe("motion-long")`` the CLI, stage 0's batches and
    stage-0 clips see the new S0_BATCH / VISION_TOWER_STEPS / INSTRUCT_STEPS / S0_EXTRA_SEEDS (INSTRUCT_LR: the
    card test above), and ``use_recipe("v1")`` restores them."""
    import ast
    from pathlib import Path
    from types import SimpleNamespace

    root = Path(__file__).resolve().parents[1]
    allowed = {"TrainError", "use_recipe"}
    for p in [*sorted((root / "lib" / "emoprobe").glob("*.py")), *sorted((root / "scripts").glob("*.py"))]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "train_recipe":
                names = {a.name for a in node.names}
                assert names <= allowed, f"{p.name} copies {sorted(names - allowed)} from train_recipe"
    committed = (R.S0_BATCH, R.VISION_TOWER_STEPS, R.INSTRUCT_STEPS, R.INSTRUCT_LR, R.S0_EXTRA_SEEDS)
    seen = {}

    def fake_microvlm(out_dir, **kw):
        seen[kw["mode"]] = (kw["vision_steps"], kw["instruct_steps"], R.S0_BATCH, R.INSTRUCT_LR)
        return {}

    monkeypatch.setattr(train, "splits", lambda seed: (tiny_df, tiny_df))
    monkeypatch.setattr(train, "train_microvlm", fake_microvlm)
    monkeypatch.setattr(train, "write_card", lambda d: None)

    class Stop(Exception):
        pass

    def fake_batches(processor, data, clips, steps, size):
        seen["s0_batch"] = size
        raise Stop

    monkeypatch.setattr(TL, "VisionBatches", fake_batches)
    monkeypatch.setattr(TL, "_target_norm", lambda data, clips: {"mean": np.zeros(3)})
    vc = SimpleNamespace(spatial_merge_size=2, patch_size=14, out_hidden_size=4)
    model = SimpleNamespace(model=SimpleNamespace(visual=torch.nn.Linear(2, 2)), config=SimpleNamespace(vision_config=vc))
    proc = SimpleNamespace(video_processor=SimpleNamespace(size={"longest_edge": 112 * 112}))
    from emoprobe import synthfer

    monkeypatch.setattr(synthfer, "dataset", lambda *a, **k: tiny_df.head(2))
    try:
        assert train.main(["--only", "microvlm", "--recipe", "motion-long", "--out", str(tmp_path)]) == 0
        assert seen["lexical"] == (1500, 2500, 32, 3e-4)
        assert R.RECIPE == "v1"                       # main gives the caller its recipe back
        R.use_recipe("motion-long")
        with pytest.raises(Stop):
            TL.pretrain_vision_tower(model, proc, None, 5, "cpu", 0, None, "t", 0.0, clips=tiny_df)
        assert seen["s0_batch"] == 32
        assert len(D.stage0_clips(tiny_df.head(3))) == 3 + 2 * len(R.S0_EXTRA_SEEDS) > 3
    finally:
        R.use_recipe("v1")
    assert (R.S0_BATCH, R.VISION_TOWER_STEPS, R.INSTRUCT_STEPS, R.INSTRUCT_LR, R.S0_EXTRA_SEEDS) == committed
    with pytest.raises(Stop):
        TL.pretrain_vision_tower(model, proc, None, 5, "cpu", 0, None, "t", 0.0, clips=tiny_df)
    assert seen["s0_batch"] == 8 and D.stage0_clips(tiny_df) is tiny_df


def test_scripts_use_no_private_name_of_the_training_modules():
    """Scripts reach the training code through public names only (issue 13)."""
    import re
    from pathlib import Path

    mods = ("train", "train_recipe", "train_data", "train_loops", "cards")
    for p in sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py")):
        text = p.read_text()
        aliases = set()
        for m in re.finditer(r"from emoprobe import ([^\n]+)", text):
            for part in m.group(1).split(","):
                name, _, alias = part.strip().partition(" as ")
                if name in mods:
                    aliases.add(alias or name)
        for a in aliases:
            bad = re.findall(r"(?<![\w.])" + re.escape(a) + r"\._\w+", text)
            assert not bad, f"{p.name} uses private {bad}"


def test_stage0_waits_for_a_tower_being_computed(tiny_vlm, tiny_df, tmp_path, monkeypatch):
    """Two processes asking for the same stage-0 key (make models' two chains): the second waits on the key's
    lock, then loads the first's tower instead of computing it again."""
    import fcntl
    import threading
    import time as _time

    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    data = D.MicroData(tiny_df, tiny_df, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))

    def fresh():
        torch.manual_seed(0)
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)

    a = fresh()
    TL.stage0_cached(a, proc, data, 2, "cpu", 0, TL.CsvLog(tmp_path / "a.csv"), "a", 0.0, tiny_df.head(6))
    (lock_path,) = (tmp_path / "cache" / "train").glob("stage0_*.lock")
    b = fresh()
    with open(lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=TL.stage0_cached, args=(b, proc, data, 2, "cpu", 0,
                                                             TL.CsvLog(tmp_path / "b.csv"), "b", 0.0, tiny_df.head(6)))
        t.start()
        _time.sleep(0.5)
        assert t.is_alive()                       # waiting for the lock
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(60)
    assert not t.is_alive()
    assert len(list((tmp_path / "cache" / "train").glob("stage0_*.safetensors"))) == 1
    assert (tmp_path / "b.csv").read_text() != "" and \
        [r.split(",")[2:4] for r in (tmp_path / "b.csv").read_text().splitlines()[1:]] == \
        [r.split(",")[2:4] for r in (tmp_path / "a.csv").read_text().splitlines()[1:]]   # a's log rows: loaded
    sa, sb = a.model.visual.state_dict(), b.model.visual.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage0_cache_is_filled_from_a_committed_tower_with_its_key(tiny_vlm, tiny_df, tmp_path, monkeypatch):
    """``make models`` loads a committed tower (data/towers/) whose JSON carries the stage-0 cache key instead of
    recomputing stage 0; a tower whose bytes differ from its JSON's sha256 raises naming the file; another key, or
    EMOPROBE_RECOMPUTE_STAGE0=1, recomputes."""
    import hashlib
    import json
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from emoprobe import paths
    from emoprobe.train_recipe import TrainError

    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    towers = tmp_path / "towers"
    towers.mkdir()
    monkeypatch.setattr(paths, "towers", lambda: towers)
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    data = D.MicroData(tiny_df, tiny_df, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))

    def fresh():
        torch.manual_seed(0)
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)

    def run(name):
        m = fresh()
        TL.stage0_cached(m, proc, data, 2, "cpu", 0, TL.CsvLog(tmp_path / f"{name}.csv"), name, 0.0, tiny_df.head(6))
        return m.model.visual.state_dict()

    computed = run("a")
    (entry,) = (tmp_path / "cache" / "train").glob("stage0_*.safetensors")
    key = entry.stem.split("_", 1)[1]
    # the "committed" tower differs from what stage 0 computes, so loading it is told apart from recomputing
    committed = {k: v + 1.0 if v.is_floating_point() else v for k, v in load_file(str(entry)).items()}
    save_file(committed, str(towers / "t.safetensors"))
    shutil.copy2(entry.with_suffix(".csv"), towers / "t.csv")
    meta = {"tower": "t.safetensors", "cache_key": key,
            "sha256": hashlib.sha256((towers / "t.safetensors").read_bytes()).hexdigest()}
    (towers / "t.json").write_text(json.dumps(meta))
    shutil.rmtree(tmp_path / "cache" / "train")
    got = run("b")
    assert all(torch.equal(got[k], committed[k]) for k in committed)
    rows = lambda n: [r.split(",")[1:] for r in (tmp_path / f"{n}.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert rows("b") == rows("a") != []                                        # its log rows come along

    shutil.rmtree(tmp_path / "cache" / "train")
    monkeypatch.setenv(TL.RECOMPUTE_STAGE0_ENV, "1")
    got = run("c")
    assert all(torch.equal(got[k], computed[k]) for k in computed)
    monkeypatch.delenv(TL.RECOMPUTE_STAGE0_ENV)

    shutil.rmtree(tmp_path / "cache" / "train")
    (towers / "t.json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(TrainError, match=r"t\.safetensors: sha256"):
        run("d")
    (towers / "t.json").write_text(json.dumps({**meta, "cache_key": "0" * 16}))
    got = run("e")                                 # another key: the committed tower is not this entry
    assert all(torch.equal(got[k], computed[k]) for k in computed)


@pytest.mark.parametrize("train_merger", [False, True])
def test_stage1_trains_the_merger_only_when_the_recipe_says_so(tiny_vlm, tiny_df, tmp_path, monkeypatch, train_merger):
    """``PRETRAIN_MERGER = False`` (recipe motion-3splits-fm): caption pretraining leaves the merger exactly at its
    stage-0 weights and still trains the language model; True (the earlier recipes): both move."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_vlm)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(TL, "new_microvlm", lambda out_dir, pool, gt, seed, device="cpu": (proc, model))
    monkeypatch.setattr(TL, "per_class", lambda df, n, seed, tag: df.groupby("label").head(1))
    monkeypatch.setattr(TL, "classify_clips", lambda train_df, pool, seed, workers: pool)
    monkeypatch.setattr(R, "PRETRAIN_MERGER", train_merger)
    meta = TL.train_microvlm(tmp_path / "m", mode="uniform", pretrain_steps=3, instruct_steps=0, vision_steps=0,
                             train_df=tiny_df, val_df=tiny_df.head(2), word_p=captions.word_probs(MAFW, "uniform"))
    assert meta["pretrain_merger"] is train_merger
    after = model.state_dict()                         # the model object train_microvlm trained (and saved)
    assert (tmp_path / "m" / "model.safetensors").exists()
    merger = [k for k in before if ".visual.merger." in k]
    lm = [k for k in before if ".language_model." in k and k.endswith("q_proj.weight")]
    assert merger and lm
    assert all(torch.equal(before[k], after[k]) for k in merger) is not train_merger
    assert not any(torch.equal(before[k], after[k]) for k in lm)
    tower = [k for k in before if ".visual." in k and ".merger." not in k]
    assert all(torch.equal(before[k], after[k]) for k in tower)       # the tower itself stays frozen either way


def _tiny_microvlm_training(tiny_vlm, tiny_df, monkeypatch) -> dict:
    """train_microvlm on the tiny VLM and a handful of clips (one per class for every pool): its keyword args."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_vlm)
    monkeypatch.setattr(TL, "new_microvlm", lambda out_dir, pool, gt, seed, device="cpu":
                        (proc, Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm)))
    monkeypatch.setattr(TL, "per_class", lambda df, n, seed, tag: df.groupby("label").head(1))
    monkeypatch.setattr(TL, "classify_clips", lambda train_df, pool, seed, workers: pool)
    return dict(mode="uniform", pretrain_steps=2, instruct_steps=2, vision_steps=0, train_df=tiny_df,
                val_df=tiny_df.head(2), word_p=captions.word_probs(MAFW, "uniform"), eval_every=1)


def test_polish_resumes_a_stage2_checkpoint_with_the_merger_frozen(tiny_vlm, tiny_df, tmp_path, monkeypatch):
    """Recipe motion-3splits-fm-polish: ``resume`` loads a checkpoint trained by stages 0-2 of the same recipe and
    runs only the polish stage; with ``POLISH_MERGER = False`` the merger stays bit-identical, the language model
    moves, the old log heads the new one; a checkpoint of other stage-2 settings, or the output folder itself, is
    refused with the file named."""
    import pandas as pd
    from safetensors.torch import load_file

    kw = _tiny_microvlm_training(tiny_vlm, tiny_df, monkeypatch)
    monkeypatch.setattr(R, "POLISH_STEPS", 0)
    first = TL.train_microvlm(tmp_path / "stage2", **kw)
    assert first["polish_steps"] == 0 and first["resumed_from"] is None
    monkeypatch.setattr(R, "POLISH_STEPS", 3)
    monkeypatch.setattr(R, "POLISH_MERGER", False)
    meta = TL.train_microvlm(tmp_path / "polished", resume=tmp_path / "stage2", **kw)
    assert meta["polish_steps"] == 3 and meta["resumed_from"]["path"] == str(tmp_path / "stage2")
    a = load_file(str(tmp_path / "stage2" / "model.safetensors"))
    b = load_file(str(tmp_path / "polished" / "model.safetensors"))
    merger = [k for k in a if ".merger." in k]
    lm = [k for k in a if k.endswith("self_attn.q_proj.weight")]
    assert merger and lm
    assert all(torch.equal(a[k], b[k]) for k in merger)
    assert not any(torch.equal(a[k], b[k]) for k in lm)
    log = pd.read_csv(tmp_path / "polished" / "train_log.csv")
    assert list(log["stage"].unique()) == ["pretrain", "instruct", "polish"]
    assert log[log["stage"] == "polish"]["val_macro_f1"].notna().all()
    with pytest.raises(R.TrainError, match=r"stage2.*training\.json.*instruct_steps"):
        TL.train_microvlm(tmp_path / "other", resume=tmp_path / "stage2", **{**kw, "instruct_steps": 5})
    with pytest.raises(R.TrainError, match="output folder"):
        TL.train_microvlm(tmp_path / "stage2", resume=tmp_path / "stage2", **kw)
    assert (tmp_path / "stage2" / "model.safetensors").exists()     # the refused call deleted nothing


def test_repolish_takes_a_polished_checkpoint_only_when_asked_and_can_train_one_task(tiny_vlm, tiny_df, tmp_path,
                                                                                      monkeypatch):
    """Diagnostics (``microvlm_budget.py run --repolish``): a polished checkpoint is refused by a plain resume and
    accepted with ``repolish``; ``POLISH_MIX`` gives the polish stage its own task mix (every polish batch then
    holds only that task) while ``instruct_mix`` still records stage 2's; the earlier polish is recorded."""
    kw = _tiny_microvlm_training(tiny_vlm, tiny_df, monkeypatch)
    monkeypatch.setattr(R, "POLISH_STEPS", 2)
    first = TL.train_microvlm(tmp_path / "polished", **kw)
    assert first["polish_steps"] == 2 and first["polish_mix"] == first["instruct_mix"]
    with pytest.raises(R.TrainError, match=r"polished.*training\.json.*polish_steps"):
        TL.train_microvlm(tmp_path / "again", resume=tmp_path / "polished", **kw)
    tasks = []
    real_batch = TL.MicroData.batch

    def spy(self, stage, step, size):
        out = real_batch(self, stage, step, size)
        tasks.extend(e.task for e in out)
        return out

    monkeypatch.setattr(TL.MicroData, "batch", spy)
    monkeypatch.setattr(R, "POLISH_MIX", {"motion": 1.0})
    meta = TL.train_microvlm(tmp_path / "again", resume=tmp_path / "polished", repolish=True, **kw)
    assert tasks and set(tasks) == {"motion"}
    assert meta["polish_mix"] == {"motion": 1.0} and meta["instruct_mix"] == first["instruct_mix"]
    assert meta["resumed_from"]["polish_steps"] == 2


def test_motion_descriptions_come_from_the_pool_or_the_classification_set(tiny_df, monkeypatch):
    """MOTION_FROM: the committed recipe draws stage 2's motion descriptions from the pool (gaps cached); "cls" draws
    them from the classification set (not cached: thousands of clips); anything else is refused."""
    from emoprobe import train_data as D

    pool, cls_set = tiny_df.head(4).reset_index(drop=True), tiny_df
    data = D.MicroData(pool, cls_set, D.GroundTruth(), 0, captions.word_probs(MAFW, "uniform"))

    def drawn(n=12):
        out = []
        for k in range(n):
            rng = D.seeded_rng(0, "t", k)
            i = int(D.seeded_rng(0, "t", k).integers(len(pool if R.MOTION_FROM == "pool" else cls_set)))
            ex = data.motion_example(rng)
            out.append((pool if R.MOTION_FROM == "pool" else cls_set).iloc[i]["clip_id"])
            assert ex.task == "motion" and ex.answer
        return out

    assert R.MOTION_FROM == "pool"
    assert set(drawn()) <= set(pool["clip_id"]) and set(data._gaps) <= set(pool["clip_id"]) and data._gaps
    data._gaps.clear()
    monkeypatch.setattr(R, "MOTION_FROM", "cls")
    got = set(drawn())
    assert got <= set(cls_set["clip_id"]) and len(got - set(pool["clip_id"])) > 0 and not data._gaps
    monkeypatch.setattr(R, "MOTION_FROM", "everything")
    with pytest.raises(R.TrainError, match="MOTION_FROM"):
        data.motion_example(D.seeded_rng(0, "t", 0))
