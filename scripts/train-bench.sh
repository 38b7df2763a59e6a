#!/usr/bin/env bash
# Training speed, tdsl against PyTorch in the same run on the same machine: the digits CNN (SGD with momentum,
# batch 64) and the character-level transformer of examples/charlm (AdamW, batch 32). tdsl runs `tdslc train`
# on the executor DEVICE names (`--device`, default auto: the CPU executor on a machine without a GPU, with
# TDSL_CPU_THREADS threads, default 2 here to match PyTorch; DEVICE=gpu for lavapipe) and reports steps/s over the time spent in steps
# (validation excluded) and the device memory it holds; PyTorch runs on the CPU with 2 threads
# (scripts/digits-reference.py --bench, scripts/charlm-reference.py --bench: median step of 200 and 100
# steps after a warm-up). The engines alternate over ROUNDS rounds (default 3), so a busy moment of the
# machine lands on both; prints each number, the ratio PyTorch / tdsl of each round and the median ratio.
#
#     PYTHON=/path/to/venv/bin/python ROUNDS=3 scripts/train-bench.sh
#
# Needs: a Python with torch, numpy and safetensors (PYTHON, default python3); the digits (fetched here).
# Run it on an otherwise idle machine: PyTorch uses 2 threads, the CPU executor TDSL_CPU_THREADS (2 unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-200}
ROUNDS=${ROUNDS:-3}
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

ratios="$work/ratios"
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    echo "digits cnn, SGD momentum 0.9, batch 64, $STEPS steps:" >&2
    cnn_tdsl=$(tdsl_rate examples/digits/cnn.tdsl --data "$data" --optimizer sgd --lr 0.05 --momentum 0.9 \
        --batch-size 64 --max-steps "$STEPS" --epochs 100 --log-every 1000000 --drop-last)
    cnn_torch=$(torch_rate cnn scripts/digits-reference.py --data "$data" --bench)
    echo "charlm, AdamW, batch 32, $((STEPS / 4)) steps:" >&2
    lm_tdsl=$(tdsl_rate examples/charlm/charlm.tdsl --data tests/fixtures/train/charlm_data.safetensors \
        --optimizer adamw --lr 0.003 --batch-size 32 --val-split 0.1 --max-steps $((STEPS / 4)) --epochs 100 \
        --log-every 1000000 --drop-last)
    lm_torch=$(torch_rate charlm scripts/charlm-reference.py --bench)
    echo "$cnn_tdsl $cnn_torch $lm_tdsl $lm_torch" >>"$ratios"
done
"$PYTHON" - "$ratios" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
for name, t, p in (("digits cnn", 0, 1), ("charlm", 2, 3)):
    for r in rows:
        print(f"{name:11s} tdsl {r[t]:8.1f} steps/s   PyTorch CPU (2 threads) {r[p]:8.1f} steps/s   PyTorch / tdsl {r[p] / r[t]:5.2f}x")
    per_round = [r[p] / r[t] for r in rows]
    print(f"{name:11s} median PyTorch / tdsl over {len(rows)} round(s): {statistics.median(per_round):.2f}x "
          f"(per round: {' '.join(f'{x:.2f}' for x in per_round)})")
PY
