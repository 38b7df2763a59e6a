#!/usr/bin/env bash
# Training speed, tdsl against PyTorch in the same run on the same machine: the digits CNN (SGD with momentum,
# batch 64) and the character-level transformer of examples/charlm (AdamW, batch 32). tdsl runs `tdslc train`
# on the executor DEVICE names (`--device`, default auto: the CPU executor on a machine without a GPU, with
# TDSL_CPU_THREADS threads, default 2 here to match PyTorch; DEVICE=gpu for lavapipe) and reports steps/s over the time spent in steps
# (validation excluded) and the device memory it holds; PyTorch runs on the CPU with 2 threads
# (scripts/digits-reference.py --bench, scripts/charlm-reference.py --bench: median step of 200 and 100
# steps after a warm-up). Prints each number and the ratio PyTorch / tdsl.
#
#     PYTHON=/path/to/venv/bin/python scripts/train-bench.sh
#
# Needs: a Python with torch, numpy and safetensors (PYTHON, default python3); the digits (fetched here).
# Run it on an otherwise idle machine: PyTorch uses 2 threads, the CPU executor TDSL_CPU_THREADS (2 unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-200}
DEVICE=${DEVICE:-auto}
export TDSL_CPU_THREADS=${TDSL_CPU_THREADS:-2}

data=$(bash scripts/fetch-digits.sh | tail -n1)
cargo build --release --bin tdslc >&2
tdslc=target/release/tdslc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tdsl_rate() { # steps/s from `tdslc train`'s summary; the memory line is printed as it is
    "$tdslc" train --device "$DEVICE" "$@" 2>/dev/null | tee "$work/out" | grep -E '^(trained|device memory|memory held)' >&2
    sed -n 's/.*: \([0-9.]*\) steps\/s over.*/\1/p' "$work/out"
}
torch_rate() { # steps/s of the JSON line whose model is $1
    "$PYTHON" "${@:2}" | "$PYTHON" -c "import json, sys
for line in sys.stdin:
    if not line.startswith('{'):
        continue
    r = json.loads(line)
    if r['model'] == '$1':
        print(r['steps_per_s'])"
}

echo "digits cnn, SGD momentum 0.9, batch 64, $STEPS steps:" >&2
cnn_tdsl=$(tdsl_rate examples/digits/cnn.tdsl --data "$data" --optimizer sgd --lr 0.05 --momentum 0.9 \
    --batch-size 64 --max-steps "$STEPS" --epochs 100 --log-every 1000000 --drop-last)
cnn_torch=$(torch_rate cnn scripts/digits-reference.py --data "$data" --bench)
echo "charlm, AdamW, batch 32, $((STEPS / 4)) steps:" >&2
lm_tdsl=$(tdsl_rate examples/charlm/charlm.tdsl --data tests/fixtures/train/charlm_data.safetensors \
    --optimizer adamw --lr 0.003 --batch-size 32 --val-split 0.1 --max-steps $((STEPS / 4)) --epochs 100 \
    --log-every 1000000 --drop-last)
lm_torch=$(torch_rate charlm scripts/charlm-reference.py --bench)
"$PYTHON" - "$cnn_tdsl" "$cnn_torch" "$lm_tdsl" "$lm_torch" <<'PY'
import sys
cnn_tdsl, cnn_torch, lm_tdsl, lm_torch = map(float, sys.argv[1:])
for name, t, p in (("digits cnn", cnn_tdsl, cnn_torch), ("charlm", lm_tdsl, lm_torch)):
    print(f"{name:11s} tdsl {t:8.1f} steps/s   PyTorch CPU (2 threads) {p:8.1f} steps/s   PyTorch / tdsl {p / t:6.1f}x")
PY
