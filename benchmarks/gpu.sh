#!/usr/bin/env bash
# The GPU checks of codecl's speed, for a borrowed GPU machine, in about 7 minutes and without the internet:
# the fp16/bf16 stability tests, then benchmarks/throughput.py on codet5-small's shape in bf16 and in fp16
# with the original protocol's estimated wall time and the peak GPU memory of every arm.
#
# Usage: bash benchmarks/gpu.sh      (ROUNDS=3 STEPS=100 DECODE=200 PYTHON=python by default)
#
# Everything is printed and also written to ${OUT:-.}/gpu-benchmark.log.
# The corpus is mined from this machine's Python alone (the standard library and whatever pinned packages
# are installed; the JavaScript part needs npm tarballs, which an offline machine cannot fetch), so the
# shipped tiny base, made from another machine's corpus, does not match it: the tiny base is built here with
# one pretraining step. Only its tokenizer is used, for token ids; codet5-small's shape is random anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-.}"
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu-benchmark.log") 2>&1

PYTHON="${PYTHON:-python}"
ROUNDS="${ROUNDS:-3}"
STEPS="${STEPS:-100}"    # training steps of 16 examples per run; a codet5-small step is tens of ms on an H100
DECODE="${DECODE:-200}"  # decoded test examples per run (the default config's whole test split)
failed=0

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv

if ! "$PYTHON" -c "import codecl" 2>/dev/null; then
    echo "== installing codecl (editable, no dependencies)"
    # No build isolation: it would fetch setuptools from the internet. Failing that, run from the source tree.
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . \
        || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import codecl.runner, accelerate, peft, torch, transformers
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__,
      '| peft', peft.__version__, '| accelerate', accelerate.__version__)"

echo "== tests/test_stability.py -k 'fp16 or bf16'"
if "$PYTHON" -m pytest --version >/dev/null 2>&1; then
    "$PYTHON" -m pytest -q tests/test_stability.py -k "fp16 or bf16" || failed=1
else
    echo "pytest is not installed here: skipped"
fi

for precision in bf16 fp16; do
    echo "== benchmarks/throughput.py, codet5-small's shape, $precision"
    "$PYTHON" benchmarks/throughput.py --shapes codet5-small --device cuda --precision "$precision" \
        --rounds "$ROUNDS" --train-steps "codet5-small=$STEPS" --decode-examples "codet5-small=$DECODE" \
        --protocol-estimate --set "data.stream=[python]" --set "data.train_examples=$((STEPS * 16))" \
        --set model.tiny.pretrain_steps=1 || failed=1
done

echo "== done $(date -u '+%H:%M:%S UTC'); log: $OUT_DIR/gpu-benchmark.log"
exit "$failed"
