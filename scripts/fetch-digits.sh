#!/usr/bin/env bash
# Fetches scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes) and writes them as one
# safetensors file for tdsl's training data (`tdsl_runtime::Dataset::from_safetensors`); prints the file's
# path as the last line of stdout (progress goes to stderr):
#
#     digits=$(scripts/fetch-digits.sh | tail -n1)
#
# Cache: ${TDSL_DIGITS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/digits}/digits.safetensors with
#     images  f32[1797, 1, 8, 8]  pixel values 0..16 divided by 16, in the file's order
#     labels  i32[1797]           0..9
#
# Source: the file sklearn/datasets/data/digits.csv.gz inside the scikit-learn wheel (pinned below), fetched
# with `pip download --no-deps` (nothing is installed), unpacked with Python's zipfile; the CSV's sha256 must
# be the one below (the same in every platform's wheel). Idempotent: a complete cache is printed and left
# alone; the file is written beside the cache and renamed into place only when complete.
#
# Needs: python3 with pip (PYTHON overrides the interpreter), network access to the Python package index.
set -euo pipefail

PKG_VERSION=1.5.2
CSV_SHA256=09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22

PYTHON=${PYTHON:-python3}
DEST=${TDSL_DIGITS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/digits}
OUT="$DEST/digits.safetensors"

log() { printf 'fetch-digits: %s\n' "$*" >&2; }
die() { printf 'fetch-digits: error: %s\n' "$*" >&2; exit 1; }

if [[ -f "$OUT" ]]; then
    echo "$OUT"
    exit 0
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON to a python3 with pip)"
mkdir -p "$DEST"
work=$(mktemp -d "$DEST/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "downloading scikit-learn $PKG_VERSION (wheel only, no dependencies)"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "scikit-learn==$PKG_VERSION" >&2 \
    || die "pip download of scikit-learn==$PKG_VERSION failed"

"$PYTHON" - "$work" "$CSV_SHA256" "$work/digits.safetensors" <<'EOF'
import glob, gzip, hashlib, json, struct, sys, zipfile

work, want, out = sys.argv[1:4]
wheels = glob.glob(f"{work}/scikit_learn-*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-digits: error: expected one scikit-learn wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    raw = z.read("sklearn/datasets/data/digits.csv.gz")
got = hashlib.sha256(raw).hexdigest()
if got != want:
    sys.exit(f"fetch-digits: error: digits.csv.gz has sha256 {got}, expected {want}")
print(f"fetch-digits: digits.csv.gz sha256 {got}", file=sys.stderr)
rows = [line.split(",") for line in gzip.decompress(raw).decode().split("\n") if line.strip()]
if len(rows) != 1797 or any(len(r) != 65 for r in rows):
    sys.exit(f"fetch-digits: error: expected 1797 rows of 65 values, found {len(rows)}")
pixels = [float(v) / 16.0 for r in rows for v in r[:64]]
labels = [int(float(r[64])) for r in rows]
if not all(0 <= l <= 9 for l in labels):
    sys.exit("fetch-digits: error: a label outside 0..9")
images = struct.pack(f"<{len(pixels)}f", *pixels)
classes = struct.pack(f"<{len(labels)}i", *labels)
header = {
    "images": {"dtype": "F32", "shape": [1797, 1, 8, 8], "data_offsets": [0, len(images)]},
    "labels": {"dtype": "I32", "shape": [1797], "data_offsets": [len(images), len(images) + len(classes)]},
}
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + images + classes)
EOF

mv "$work/digits.safetensors" "$OUT"
log "wrote $OUT"
echo "$OUT"
