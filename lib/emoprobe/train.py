"""Training the embedded default models on SynthFER: MicroVLM (+ its uniform-word control), the vision-only
temporal classifier (+ its decoupled balanced re-training) and balanced LoRA fine-tuning.

``python -m emoprobe.train --all --seed 0`` retrains everything into ``data/models/`` (``--only NAME``,
``--steps-scale 0.01`` for a smoke run, ``--recipe NAME`` for another MicroVLM recipe, ``--jobs 2`` for two
chains of models side by side). This module is the command line only; the recipes and their constants are in
:mod:`emoprobe.train_recipe` (its docstring describes every recipe), the data in :mod:`emoprobe.train_data`, the
training loops in :mod:`emoprobe.train_loops` and the model cards in :mod:`emoprobe.cards`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import paths
from . import train_recipe as R
from .cards import write_card
from .train_data import log_line, splits
from .train_loops import lora_balanced, train_microvlm, train_vision
from .train_recipe import TrainError, use_recipe


def _scaled(n: int, scale: float) -> int:
    return max(2, int(round(n * scale)))


def _two_chains(a) -> int:
    """``--all --jobs 2``: two chains of ``--only`` runs in child processes, each chain sequential. Stage 0 of
    MicroVLM is cached, so microvlm-uniform (second in its chain, after vision3d) normally reuses it."""
    import subprocess
    import threading

    common = ["--seed", str(a.seed), "--steps-scale", str(a.steps_scale), "--threads", str(a.threads),
              "--workers", str(a.workers), "--recipe", a.recipe]
    if a.out:
        common += ["--out", a.out]
    chains = [["microvlm", "microvlm-lora"], ["vision3d", "microvlm-uniform"]]
    failed: list[str] = []
    t0 = time.time()

    def run_chain(chain):
        for name in chain:
            r = subprocess.run([sys.executable, "-m", "emoprobe.train", "--only", name, *common])
            if r.returncode:
                failed.append(f"{name} (exit {r.returncode})")
                return            # later links depend on this one

    threads = [threading.Thread(target=run_chain, args=(c,)) for c in chains]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log_line(f"--all --jobs 2 done in {time.time() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emoprobe.train", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--all", action="store_true", help="train every embedded model")
    g.add_argument("--only", choices=R.MODEL_NAMES + ("microvlm-lora",), help="train one model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every step count (0.01: smoke)")
    ap.add_argument("--out", default=None, help="output folder (default: data/models; with --steps-scale != 1: "
                                                "data/cache/models-smoke)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it; default 1)")
    ap.add_argument("--recipe", default=R.COMMITTED, choices=sorted(R.RECIPES),
                    help="MicroVLM recipe (default: the one the committed checkpoints were trained with)")
    ap.add_argument("--workers", type=int, default=0,
                    help="MicroVLM: data-loader processes preparing batches (decoding, processor) beside the "
                         "training process; the batches, hence the weights, are the same for any number")
    ap.add_argument("--device", default="cpu", help="MicroVLM: cpu or cuda (GPU float arithmetic differs from CPU's)")
    ap.add_argument("--word-probs", default=None,
                    help="JSON {mode: {label: p}} of the emotion-word probabilities, where wordfreq is not installed "
                         "(must equal captions.word_probs; written by scripts/microvlm_budget.py pack)")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                    help="with --all: 2 runs two chains side by side in separate processes (microvlm -> lora | "
                         "vision3d -> microvlm-uniform); each process uses --threads, so the weights are the "
                         "same as with --jobs 1")
    ap.add_argument("--recompute-stage0", action="store_true",
                    help="MicroVLM: recompute stage 0 even where a committed tower (data/towers/) has its cache key")
    a = ap.parse_args(argv)
    if a.recompute_stage0:   # read by train_loops.committed_tower, here and in --jobs 2's child processes
        import os

        from .train_loops import RECOMPUTE_STAGE0_ENV
        os.environ[RECOMPUTE_STAGE0_ENV] = "1"
    if a.steps_scale <= 0:
        ap.error("--steps-scale must be > 0")
    before = R.RECIPE
    use_recipe(a.recipe)
    try:
        return _run(a)
    finally:
        use_recipe(before)   # a caller (a test, a script) gets its recipe back


def _run(a) -> int:
    """``main`` after argument parsing, with the recipe ``a.recipe`` in effect."""
    if a.jobs == 2 and a.all:
        return _two_chains(a)
    torch.set_num_threads(a.threads)
    # a scaled-down run never overwrites the committed checkpoints unless --out says so
    out = Path(a.out) if a.out else (paths.models() if a.steps_scale == 1.0 else paths.cache() / "models-smoke")
    todo = R.MODEL_NAMES if a.all else (("lora",) if a.only == "microvlm-lora" else (a.only,))
    s = a.steps_scale
    t0 = time.time()
    train_df, val_df = splits(a.seed)
    log_line(f"train split {len(train_df)} clips (+{len(val_df)} validation), models: {', '.join(todo)} -> {out}")
    results = {}
    if "vision3d" in todo:
        results.update(train_vision(train_df, val_df, out / "vision3d", seed=a.seed,
                                    steps=_scaled(R.VISION_STEPS, s), crt_steps=_scaled(R.CRT_STEPS, s),
                                    balanced_out=out / "vision3d-balanced",
                                    eval_every=max(1, _scaled(250, s))))
    word_p = json.loads(Path(a.word_probs).read_text()) if a.word_probs else {}
    for name, mode in (("microvlm", "lexical"), ("microvlm-uniform", "uniform")):
        if name in todo:
            results[name] = train_microvlm(out / name, mode=mode, seed=a.seed, device=a.device,
                                           word_p=word_p.get(mode),
                                           vision_steps=_scaled(R.VISION_TOWER_STEPS, s),
                                           pretrain_steps=_scaled(R.PRETRAIN_STEPS, s),
                                           instruct_steps=_scaled(R.INSTRUCT_STEPS, s),
                                           polish_steps=_scaled(R.POLISH_STEPS, s) if R.POLISH_STEPS else 0,
                                           train_df=train_df, val_df=val_df, eval_every=max(1, _scaled(250, s)),
                                           workers=a.workers)
    if "lora" in todo:
        base = out / "microvlm"
        if not (base / "config.json").exists():
            raise TrainError(f"lora: base model {base} not trained yet (run --only microvlm first)")
        results["microvlm-lora-balanced"] = lora_balanced(base, train_df, R.LORA_PER_CLASS,
                                                          out / "microvlm-lora-balanced",
                                                          steps=_scaled(R.LORA_STEPS, s), seed=a.seed)
    for name in (["vision3d", "vision3d-balanced"] if "vision3d" in todo else []) + \
            [n for n in ("microvlm", "microvlm-uniform") if n in todo] + \
            (["microvlm-lora-balanced"] if "lora" in todo else []):
        write_card(out / name)
    log_line(f"done in {time.time() - t0:.0f} s")
    print(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
