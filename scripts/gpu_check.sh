#!/usr/bin/env bash
# One-call GPU check, sized for a 15-minute device lease (see CONTRIBUTING.md, "GPU checks").
# Runs on a bare CUDA machine from the repository root, with:
#   .devdata/   written by `python scripts/microvlm_budget.py pack ...` (pool + validation clips, stage-0 tower)
#   .whl/       transformers 5.24 + decord wheels (the machine's image lacks decord and has an older transformers)
# and writes its logs (and the trained MicroVLM variants as tar files) under $OUT.
#   1. MicroVLM budget runs on CUDA (three variants side by side; each capped at TRAIN_S seconds)
#   2. HF backend on CUDA: tiny checkpoint of every family, then random-weight full-size configs
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
TRAIN_S=${TRAIN_S:-330}; BENCH_S=${BENCH_S:-170}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/lib
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, decord; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.log"

run() {  # name, extra args
  local n=$1; shift
  timeout "$TRAIN_S" python3 scripts/microvlm_budget.py run --packed .devdata --device "${DEV:-cuda}" --workers 4 \
      --out "/tmp/budget/$n" "$@" > "$OUT/$n.log" 2>&1
  echo "$n exit $?" >> "$OUT/$n.log"
  [ -f "/tmp/budget/$n/budget.json" ] && tar -C /tmp/budget -cf "$OUT/$n.tar" "$n"
}
run a_x3 --instruct-steps 4500 &
run b_x3_cls75 --instruct-steps 4500 --classify-share 0.75 &
run c_x5 --instruct-steps 7500 &
wait
grep -h -E "instruct .*val|exit" "$OUT"/a_x3.log "$OUT"/b_x3_cls75.log "$OUT"/c_x5.log | tail -40

[ "$BENCH_S" -gt 0 ] || exit 0
timeout "$BENCH_S" bash -c '
  for f in qwen2_5_vl qwen3_vl internvl3 llava_next_video video_llava; do
    python3 scripts/bench_hf.py --family "$f" --size tiny --fps 5 --n-clips 8 --modes generate score
  done
  for f in qwen3_vl internvl3 llava_next_video video_llava; do
    python3 scripts/bench_hf.py --family "$f" --size full --fps 1 5 --n-clips 4 --modes generate score
  done' > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"
grep -v -E "Warn|warn|^ *$|Loading|Writing" "$OUT/bench.log" | tail -60
