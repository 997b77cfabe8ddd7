"""scripts/bench_hf.py --size full: the full-size configs of every family, the CUDA refusal, and (slow) one CPU run
with the real widths at depth 1."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_hf", ROOT / "scripts" / "bench_hf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_depth_override_clips_layer_indexes(bench):
    text, vision = bench._depth(bench.FULL["qwen3_vl"], None)
    assert (text["num_hidden_layers"], vision["depth"], vision["deepstack_visual_indexes"]) == (36, 27, [8, 16, 24])
    text, vision = bench._depth(bench.FULL["qwen3_vl"], 10)
    assert (text["num_hidden_layers"], vision["depth"], vision["deepstack_visual_indexes"]) == (10, 10, [8])
    _, vision = bench._depth(bench.FULL["qwen2_5_vl"], 1)
    assert vision["fullatt_block_indexes"] == [0]
    text, vision = bench._depth(bench.FULL["internvl3"], 2)
    assert (text["num_hidden_layers"], vision["num_hidden_layers"]) == (2, 2)
    assert bench.FULL["internvl3"]["text"]["num_hidden_layers"] == 28   # the table itself is not modified


# (family, text hidden/layers/vocab, vision hidden/layers, what the processor must produce)
EXPECTED = {
    "qwen2_5_vl": ((3584, 28, 152064), (1280, 32), dict(video_patch=14)),
    "qwen3_vl": ((4096, 36, 151936), (1152, 27), dict(video_patch=16)),
    "internvl3": ((3584, 28, 151674), (1024, 24), dict(side=448, image_seq_length=256)),
    "llava_next_video": ((4096, 32, 32064), (1024, 24), dict(side=336)),
    "video_llava": ((4096, 32, 32000), (1024, 24), dict(side=224)),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_full_configs(bench, family, tmp_path):
    from transformers import AutoProcessor

    from emoprobe import tiny

    proc = AutoProcessor.from_pretrained(tiny.build(family, tmp_path / "proc"), local_files_only=True)
    dims = bench.FULL[family]
    text, vision = bench._depth(dims, None)
    model_cls, config = bench.FULL_BUILDERS[family](proc, dims, text, vision)
    assert model_cls.config_class is type(config)
    tc, vc = config.get_text_config(), config.vision_config
    (th, tl, tv), (vh, vl), want = EXPECTED[family]
    assert (tc.hidden_size, tc.num_hidden_layers, tc.vocab_size) == (th, tl, tv)
    assert (vc.hidden_size, getattr(vc, "depth", None) or vc.num_hidden_layers) == (vh, vl)
    assert len(proc.tokenizer) <= tc.vocab_size
    for name in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
        i = getattr(config, name, None)
        if isinstance(i, int):
            assert 0 <= i < len(proc.tokenizer)
    if "video_patch" in want:
        assert proc.video_processor.patch_size == proc.image_processor.patch_size == want["video_patch"]
    if "side" in want:
        s = want["side"]
        for p in (proc.image_processor, proc.video_processor):
            size = dict(p.size)
            assert size.get("height", size.get("shortest_edge")) == s
    if "image_seq_length" in want:
        assert proc.image_seq_length == config.image_seq_length == want["image_seq_length"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_full_depth_needs_cuda(bench, capsys):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench.main(["--family", "internvl3", "--size", "full"])
    with pytest.raises(SystemExit, match="pass --layers"):
        bench.main(["--family", "internvl3", "--size", "full", "--device", "cpu"])
    with pytest.raises(SystemExit, match="defined for"):
        bench.main(["--family", "smolvlm", "--size", "full", "--device", "cpu", "--layers", "1"])


@pytest.mark.slow
def test_full_width_one_layer_on_cpu(bench, capsys):
    bench.main(["--family", "qwen3_vl", "--size", "full", "--device", "cpu", "--layers", "1", "--vocab", "4096",
                "--fps", "1", "--n-clips", "2", "--max-new-tokens", "2"])
    out = capsys.readouterr().out
    assert "text: 1 layers, hidden 4096" in out and "vocab 4096" in out and "vision: 1 layers, hidden 1152" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("1 ")]
    assert [r[3] for r in rows] == ["generate", "score"]
    assert all(r[7] == "True" for r in rows)   # batched answers == batch-1 answers
    assert "failures" not in out
