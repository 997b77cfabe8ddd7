"""Embedded-model inference throughput through ``run.classify``, printed as ratios against peers measured in
the same run (the machine is shared and noisy: absolute clips/s are printed too, but only the ratios are
targets; issue 11):

* ``load``   — the library under load (another process spinning on one core) / the library idle;
* ``floor``  — the library / the same model's bare ``generate`` on pre-built inputs (same thread settings, same
  clips and frames, batched the way the library batches them; the batch-1 floor is printed too);
* ``card``   — the library / a loop written from the Qwen2.5-VL model card (decord decode of the same frames,
  processor, ``generate``, batch 1), idle, with the answers compared text for text.

These three use one process (EMOPROBE_WORKERS=1), like the floor and the model card. The library's default for
long CPU runs adds a helper process (``threads.workers()``): its figures are printed too (``2proc``).

Every library run uses a fresh run store and an empty decoded-frame cache (nothing cached). Usage::

    python scripts/bench_inference.py [--per-class 4] [--fps 2] [--model data/models/microvlm] [--repeats 2]

Thread settings are the library's own (``emoprobe.threads``), applied to every peer alike.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _clips(per_class: int):
    from emoprobe import data

    spec = {"name": "synthfer", "label_set": "mafw", "n_per_class": 45, "n_train": 3000, "size": 112, "seed": 0}
    df = data.from_spec(spec, "test")
    return df.groupby("label", sort=False).head(per_class).reset_index(drop=True)


def _library(spec: dict, clips, fps: float, batch_size: int, workers: int = 1):
    """One cold ``run.classify`` (fresh store, no decoded frames cached) with ``workers`` processes."""
    from emoprobe import run, sampling, store

    sampling.clear_cache()
    os.environ["EMOPROBE_WORKERS"] = str(workers)
    with tempfile.TemporaryDirectory() as d:
        st = store.RunStore(Path(d) / "runs.sqlite")
        t0 = time.perf_counter()
        df = run.classify(spec, clips, sampling={"strategy": "fps", "fps": fps}, store=st, progress=False,
                          batch_size=batch_size)
        dt = time.perf_counter() - t0
        st.close()
    assert not df["cached"].any()
    return dt, df


def _prebuilt(backend, clips, fps: float, prompt: str):
    """Processor outputs for every clip, built outside any timing (the floor's inputs), and the frames."""
    from emoprobe import sampling

    out = []
    for p in clips["path"]:
        fr = sampling.sample(p, "fps", fps=fps)
        inputs, _, _ = backend._prepare([(fr.frames, fr.t, prompt, None)])
        out.append((fr, inputs))
    return out


def _generate(backend, kw: dict, max_new: int):
    import torch

    with torch.inference_mode():
        return backend.model.generate(**kw, max_new_tokens=max_new, do_sample=False, num_beams=1,
                                      pad_token_id=backend.tokenizer.pad_token_id,
                                      eos_token_id=backend.eos_ids or None)


def _floor(backend, prebuilt, max_new: int, batch: int) -> float:
    """Seconds for bare ``generate`` over pre-built inputs, clips of equal frame count batched ``batch`` at once."""
    import torch

    groups: dict[int, list] = {}
    for fr, inputs in prebuilt:
        groups.setdefault(len(fr), []).append(inputs)
    calls = []
    for items in groups.values():
        for j in range(0, len(items), batch):
            chunk = items[j:j + batch]
            if len(chunk) == 1:
                calls.append(backend._to_device(chunk[0]))
                continue
            kw = {}
            for k in chunk[0].keys():
                v0 = chunk[0][k]
                if k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
                    kw[k] = torch.cat([c[k] for c in chunk], 0)
                else:  # same prompt, same frame count: identical lengths, no padding needed
                    kw[k] = torch.cat([c[k] for c in chunk], 0) if isinstance(v0, torch.Tensor) else v0
            calls.append(backend._to_device(kw))
    t0 = time.perf_counter()
    for kw in calls:
        _generate(backend, kw, max_new)
    return time.perf_counter() - t0


def _model_card(backend, clips, prebuilt, max_new: int, prompt: str):
    """The Qwen2.5-VL model card's loop, batch 1, on the same frames (decoded with decord at the same indices)."""
    import decord

    from emoprobe.hf import sampling_fps

    proc = backend.processor
    texts = []
    t0 = time.perf_counter()
    for p, (fr, _) in zip(clips["path"], prebuilt):
        vr = decord.VideoReader(str(p))
        frames = vr.get_batch(list(map(int, fr.indices))).asnumpy()
        msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        fps = sampling_fps(fr.t)
        meta = {"fps": fps, "total_num_frames": len(frames), "frames_indices": [int(round(x * fps)) for x in fr.t]}
        inputs = proc(text=[text], videos=[frames], video_metadata=[meta], padding=True, return_tensors="pt")
        out = _generate(backend, dict(inputs), max_new)
        texts.append(proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip())
    return time.perf_counter() - t0, texts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="data/models/microvlm")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=None, help="run.classify batch_size (default: its own)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of each measurement (best kept)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args(argv)

    from emoprobe import labels, models, prompts, run, threads

    n_threads = threads.configure()
    spec = {"backend": "hf", "model": a.model, "name": "bench"}
    clips = _clips(a.per_class)
    prompt = prompts.render("paper", list(labels.MAFW))
    bs = a.batch_size or run.DEFAULT_BATCH_SIZE
    backend = models.load(spec)
    max_new = int(backend.spec["max_new_tokens"])
    hf_batch = int(backend.spec["batch_size"])
    prebuilt = _prebuilt(backend, clips, a.fps, prompt)
    n = len(clips)
    print(f"[bench] {n} clips ({a.per_class}/class), fps {a.fps}, {sum(len(f) for f, _ in prebuilt) / n:.1f} "
          f"frames/clip, torch threads {n_threads}, run.classify batch_size {bs}, hf batch {hf_batch}", flush=True)

    _library(spec, clips.head(4), a.fps, bs)  # warm-up (imports, caches)
    best = lambda f: min(f() for _ in range(a.repeats))  # noqa: E731
    lib_runs = []

    def lib():
        dt, df = _library(spec, clips, a.fps, bs)
        lib_runs.append(df)
        return dt

    t_lib = best(lib)
    t_floor = best(lambda: _floor(backend, prebuilt, max_new, hf_batch))
    t_floor1 = best(lambda: _floor(backend, prebuilt, max_new, 1))
    card = [_model_card(backend, clips, prebuilt, max_new, prompt) for _ in range(a.repeats)]
    t_card = min(c[0] for c in card)
    card_texts = card[0][1]

    run.PARALLEL_MIN_ITEMS = 0  # helper processes whatever the number of clips (their start is paid by warm-up)
    lib2 = lambda: _library(spec, clips, a.fps, bs, workers=2)[0]  # noqa: E731
    lib2()
    t_lib2 = best(lib2)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        t_load = best(lib)
        t_load2 = best(lib2)
    finally:
        spinner.kill()
        spinner.wait()
        run.shutdown_helpers()

    ref = lib_runs[0]
    same_lib = all(df["raw"].tolist() == ref["raw"].tolist() for df in lib_runs)
    same_card = ref["raw"].fillna("").str.strip().tolist() == card_texts
    rate = lambda t: n / t  # noqa: E731
    fig = {
        "clips": n, "threads": n_threads, "batch_size": bs,
        "clips_per_s": {"library_idle": rate(t_lib), "library_loaded": rate(t_load), "floor_batched": rate(t_floor),
                        "floor_batch1": rate(t_floor1), "model_card": rate(t_card),
                        "library_2proc_idle": rate(t_lib2), "library_2proc_loaded": rate(t_load2)},
        "ratios": {"loaded_over_idle": t_lib / t_load, "library_over_floor": t_floor / t_lib,
                   "library_over_floor_batch1": t_floor1 / t_lib, "library_over_model_card": t_card / t_lib,
                   "2proc_over_1proc_idle": t_lib / t_lib2, "2proc_loaded_over_2proc_idle": t_lib2 / t_load2,
                   "2proc_over_model_card": t_card / t_lib2},
        "goals": {"loaded_over_idle": 0.5, "library_over_floor": 0.6, "library_over_model_card": 1.5},
        "identical_answers": {"library_runs": same_lib, "library_vs_model_card": same_card},
        "load_avg_at_end": os.getloadavg()[0],
    }
    for k, v in fig["clips_per_s"].items():
        print(f"  {k:<22} {v:7.1f} clips/s")
    for k, v in fig["ratios"].items():
        goal = fig["goals"].get(k)
        mark = "" if goal is None else (f"  (goal >= {goal}: {'met' if v >= goal else 'NOT met'})")
        print(f"  {k:<26} {v:5.2f}{mark}")
    print(f"  identical answers: library runs {same_lib}, library vs model card {same_card}")
    print(f"  1-min load average at the end {fig['load_avg_at_end']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
