#!/usr/bin/env bash
# Issue 12 on a lent GPU, in one call sized for a 15-minute lease: train both MicroVLMs with the `motion-long`
# recipe (python -m emoprobe.train --recipe motion-long), the same code and data order as on the CPU.
# Runs on a bare CUDA machine from the repository root, with:
#   .whl/      decord, av (PyAV: SynthFER writes h264) and transformers 5.24 wheels (the image lacks the first two)
#   .devdata/  word_probs.json (scripts/microvlm_budget.py pack; wordfreq is not on that machine)
# Writes logs, the stage-0 tower and the two trained models (tar) under $OUT. SCALE=0.01 DEV=cpu rehearses it on the CPU.
#   1. SynthFER MAFW train splits of seeds 0 (the train split) and 1, 2 (stage 0 only) generated there
#   2. stage 0 once (scripts/microvlm_budget.py stage0 -> the recipe's stage-0 cache, + held-out readout R^2)
#   3. microvlm and microvlm-uniform side by side, both reusing that stage 0
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
DEV=${DEV:-cuda}; SCALE=${SCALE:-1}; GEN_W=${GEN_W:-15}; S0_W=${S0_W:-14}; W=${W:-7}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
if [ -d .whl ] && [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/lib EMOPROBE_GENERATED=/tmp/gen
fi
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import torch, transformers, decord, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.log"
t0=$(date +%s)
$PY -c "
from emoprobe import synthfer
for s in (0, 1, 2):
    print('seed', s, len(synthfer.dataset('mafw', 'train', seed=s, workers=$GEN_W)), 'clips', flush=True)
" > "$OUT/gen.log" 2>&1 || { tail -20 "$OUT/gen.log"; exit 1; }
echo "data $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gen.log"
S0=$($PY -c "from emoprobe import train_recipe as R; R.use_recipe('motion-long'); print(max(2, round(R.VISION_TOWER_STEPS * $SCALE)))")
timeout "${S0_LIMIT_S:-360}" $PY scripts/microvlm_budget.py stage0 --recipe motion-long --steps "$S0" --device "$DEV" --workers "$S0_W" \
    --out /tmp/s0/tower.safetensors > "$OUT/stage0.log" 2>&1 || { tail -30 "$OUT/stage0.log"; exit 1; }
grep -E "vision-tower .*(000|500)/|heldout" "$OUT/stage0.log" | tail -8
cp /tmp/s0/tower.safetensors "$OUT/"
echo "stage 0 $(( $(date +%s) - t0 )) s"
LEFT=$(( ${LIMIT_S:-560} - ($(date +%s) - t0) ))    # end inside the call's limit, logs and tower kept
[ "${STAGES12:-1}" = 1 ] && [ "$LEFT" -gt 30 ] || { echo "stages 1-2 skipped (STAGES12=${STAGES12:-1}, ${LEFT} s left)"; exit 0; }
for m in microvlm microvlm-uniform; do
  timeout "$LEFT" $PY -m emoprobe.train --only "$m" --recipe motion-long --device "$DEV" --workers "$W" --steps-scale "$SCALE" \
      --word-probs .devdata/word_probs.json --out /tmp/models > "$OUT/$m.log" 2>&1 &
done
wait
echo "stages 1-2 $(( $(date +%s) - t0 )) s"
grep -h -E "instruct .*val|stage 0 reused|Error|error" "$OUT"/microvlm.log "$OUT"/microvlm-uniform.log | tail -30
for m in microvlm microvlm-uniform; do
  [ -f "/tmp/models/$m/model.safetensors" ] && tar -C /tmp/models -cf "$OUT/$m.tar" "$m"
done
ls -la "$OUT"    # 8 files: 5 logs, the tower, 2 model tars (at most 8 come back)
