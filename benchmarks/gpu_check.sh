#!/usr/bin/env bash
# The GPU figures docs/benchmarks.md asks for, in one run on a lent device (the `device` tool:
# nvidia-h100-x1 or nvidia-h200; a few minutes there). The device machine has python3 with torch,
# transformers, numba, peft and tokenizers, but no network, and the working tree that travels is at
# most 64 MiB: so the model is the default model's config and tokenizer with random weights (a
# forward pass, a finetuning step or a diff costs the same whatever the weights).
#
#   device run  carry: results/models/smollm2-135m-instruct/config.json
#                      results/models/smollm2-135m-instruct/tokenizer.json
#                      results/models/smollm2-135m-instruct/tokenizer_config.json
#                      results/models/smollm2-135m-instruct/chat_template.jinja
#               command: bash benchmarks/gpu_check.sh        (timeout_s 540)
#
# Each benchmark's table lands in $OUT (core.md, dense_topk.md, extract.md, finetune.md, env.txt).
# Here, `QUICK=1 DEVICE=cpu PY=.venv/bin/python bash benchmarks/gpu_check.sh` runs it at small sizes.
set -uo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/difflab-gpu-out}
SRC=results/models/smollm2-135m-instruct
WORK=$(mktemp -d)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [ "${QUICK:-0}" = 1 ]; then
  POSITIONS=256; SAMPLES=8; STEPS=2; REPEATS=1
else
  POSITIONS=4096; SAMPLES=512; STEPS=8; REPEATS=5
fi
status=0
step() { echo "== $1"; shift; "$@" || { echo "FAILED: $*"; status=1; }; }
# More samples than the shipped general set holds (64 records): its records, repeated.
for i in $(seq 16); do cat resources/diffmining/general.jsonl; done > "$WORK/general.jsonl"

{ nvidia-smi 2>/dev/null || true; "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"; } > "$OUT/env.txt" 2>&1
step "random-weight models" "$PY" benchmarks/random_model.py "$SRC" "$WORK/base" --seed 0
step "random-weight models" "$PY" benchmarks/random_model.py "$SRC" "$WORK/finetuned" --seed 1
step "core analysis vs the floor" bash -o pipefail -c "'$PY' benchmarks/bench_diffmining_core.py --device $DEVICE --positions $POSITIONS --repeats $REPEATS --no-naive | tee '$OUT/core.md'"
step "dense top-K vs sort" bash -o pipefail -c "'$PY' benchmarks/bench_dense_topk.py --device $DEVICE --positions $POSITIONS --repeats $REPEATS | tee '$OUT/dense_topk.md'"
step "extraction vs a bare forward" bash -o pipefail -c "'$PY' benchmarks/bench_diffmining_extract.py --base '$WORK/base' --finetuned '$WORK/finetuned' --device $DEVICE --dataset '$WORK/general.jsonl' --samples $SAMPLES --batch-size 64 --repeats 2 | tee '$OUT/extract.md'"
step "finetuning steps" bash -o pipefail -c "'$PY' benchmarks/bench_finetune.py --model '$WORK/base' --steps $STEPS --device $DEVICE | tee '$OUT/finetune.md' && '$PY' benchmarks/bench_finetune.py --model '$WORK/base' --head --steps $STEPS --device $DEVICE | tee -a '$OUT/finetune.md'"
rm -rf "$WORK"
exit $status
