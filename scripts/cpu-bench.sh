#!/usr/bin/env bash
# MiniLM on the CPU, tdsl's CPU executor against PyTorch and candle in one run on this machine, the same
# thread count for all three (THREADS, default 2) and the same token ids: batch 32 x 98 and 1 x 16, median of
# RUNS timed runs (default 7). Prints each engine's medians and the ratios issue 19 sets goals for:
# tdsl / PyTorch (goal: at most 1.0 at 32 x 98, within 2 at 1 x 16) and candle / tdsl (at least 1.5).
#
#     PYTHON=/path/to/venv/bin/python scripts/cpu-bench.sh
#
# Needs: the MiniLM weights (fetched here), a Python with torch and transformers (PYTHON, default python3;
# without it PyTorch is left out) and cargo (candle's crate, scripts/candle-minilm, is built on first use).
# Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
RUNS=${RUNS:-7}
dir=$(bash scripts/fetch-minilm.sh | tail -n1)
cargo build --release -p tdsl-minilm --example cpu-bench >&2
(cd scripts/candle-minilm && cargo build --release >&2)

median() { # the median of batch $2 x $3 from engine output $1 (tdsl and torch: text lines; candle: JSON)
    sed -n "s/^batch *$2 x *$3 tokens.*median \([0-9.]*\) ms.*/\1/p; s/.*\"batch\": $2, \"seq\": $3, \"median_ms\": \([0-9.]*\).*/\1/p" <<<"$1"
}

tdsl=$(TDSL_CPU_THREADS=$THREADS TDSL_MINILM_DIR=$dir target/release/examples/cpu-bench "$RUNS")
echo "$tdsl"
torch=""
if "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    torch=$("$PYTHON" scripts/minilm-torch-bench.py --model-dir "$dir" --threads "$THREADS" --runs "$RUNS" \
        --warmup 2 2>/dev/null)
    echo "$torch"
else
    echo "PyTorch: $PYTHON has no torch and transformers; left out" >&2
fi
candle=$(RAYON_NUM_THREADS=$THREADS TDSL_MINILM_DIR=$dir scripts/candle-minilm/target/release/candle-minilm "$RUNS")
echo "$candle"

for shape in "32 98" "1 16"; do
    set -- $shape
    t=$(median "$tdsl" "$1" "$2")
    line="batch $1 x $2: tdsl $t ms"
    if [ -n "$torch" ]; then
        p=$(median "$torch" "$1" "$2")
        line="$line, PyTorch $p ms (tdsl / PyTorch $(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }'))"
    fi
    c=$(median "$candle" "$1" "$2")
    line="$line, candle $c ms (candle / tdsl $(awk -v a="$c" -v b="$t" 'BEGIN { printf "%.2f", a / b }'))"
    echo "$line"
done
