#!/usr/bin/env bash
# MiniLM on the CPU, tdsl's CPU executor against PyTorch and candle in one run on this machine, the same
# thread count for all three (THREADS, default 2) and the same token ids: batch 32 x 98 and 1 x 16, median of
# RUNS timed runs (default 7). Prints each engine's medians and the ratios issue 19 sets goals for:
# tdsl / PyTorch (goal: at most 1.0 at 32 x 98, within 2 at 1 x 16) and candle / tdsl (at least 1.5), each
# taken within one round of the three engines (ROUNDS, default 3) and the median over rounds reported.
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

have_torch=0
if "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    have_torch=1
else
    echo "PyTorch: $PYTHON has no torch and transformers; left out" >&2
fi

# ROUNDS rounds (default 3), each running the three engines one after the other, so that a machine whose
# speed drifts (shared cores, turbo) treats them alike: each ratio is taken within one round, and the line
# reports the median over rounds of each engine's median and of each ratio.
ROUNDS=${ROUNDS:-3}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
middle() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A times ratios
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    tdsl=$(TDSL_CPU_THREADS=$THREADS TDSL_MINILM_DIR=$dir target/release/examples/cpu-bench "$RUNS")
    echo "$tdsl"
    torch=""
    if [ "$have_torch" = 1 ]; then
        torch=$("$PYTHON" scripts/minilm-torch-bench.py --model-dir "$dir" --threads "$THREADS" --runs "$RUNS" \
            --warmup 2 2>/dev/null)
        echo "$torch"
    fi
    candle=$(RAYON_NUM_THREADS=$THREADS TDSL_MINILM_DIR=$dir scripts/candle-minilm/target/release/candle-minilm "$RUNS")
    echo "$candle"
    for shape in "32 98" "1 16"; do
        set -- $shape
        t=$(median "$tdsl" "$1" "$2")
        c=$(median "$candle" "$1" "$2")
        times[tdsl $shape]+=" $t"
        times[candle $shape]+=" $c"
        ratios[candle $shape]+=" $(ratio "$c" "$t")"
        if [ -n "$torch" ]; then
            p=$(median "$torch" "$1" "$2")
            times[torch $shape]+=" $p"
            ratios[torch $shape]+=" $(ratio "$t" "$p")"
        fi
    done
done

for shape in "32 98" "1 16"; do
    set -- $shape
    line="batch $1 x $2 (median of $ROUNDS rounds): tdsl $(middle <<<"${times[tdsl $shape]}") ms"
    if [ "$have_torch" = 1 ]; then
        line="$line, PyTorch $(middle <<<"${times[torch $shape]}") ms (tdsl / PyTorch $(middle <<<"${ratios[torch $shape]}"); per round:${ratios[torch $shape]})"
    fi
    line="$line, candle $(middle <<<"${times[candle $shape]}") ms (candle / tdsl $(middle <<<"${ratios[candle $shape]}"); per round:${ratios[candle $shape]})"
    echo "$line"
done
