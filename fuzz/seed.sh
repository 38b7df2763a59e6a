#!/usr/bin/env bash
# Seeds the fuzz corpora under fuzz/corpus/ (ignored by git) from the repository's own inputs:
#   frontend: every .tdsl of examples/, tests/fixtures/ and compiler/std/
#   pipeline: the same files, each twice: prefixed with ' ' (fusion on) and with '\t' (fusion off)
#   weights:  small .npy files of every dtype and version (prefixed with byte 0) and safetensors files
#             (prefixed with byte 1), written by python3 below
# Idempotent: existing corpus files are kept (libFuzzer adds to the directories as it runs).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/frontend corpus/pipeline corpus/weights

mapfile -t sources < <(find ../examples ../tests/fixtures ../compiler/std -name '*.tdsl' | sort)
for f in "${sources[@]}"; do
    name=$(echo "${f#../}" | tr '/' '_')
    cp "$f" "corpus/frontend/$name"
    { printf ' '; cat "$f"; } >"corpus/pipeline/fused_$name"
    { printf '\t'; cat "$f"; } >"corpus/pipeline/unfused_$name"
done

python3 - corpus/weights <<'PY'
import json, struct, sys
from pathlib import Path

out = Path(sys.argv[1])

def npy(descr, shape, data, version=1):
    shape_text = "()" if not shape else ("(%d,)" % shape[0] if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")")
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    prefix = 10 if version == 1 else 12
    total = prefix + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin1") + data

seeds = {
    "npy_f32_2x3": npy("<f4", [2, 3], struct.pack("<6f", 1, -2, 3.5, 0, float("inf"), -0.0)),
    "npy_f16_4": npy("<f2", [4], struct.pack("<4e", 1, 0.5, -65504, 6e-8)),
    "npy_i32_scalar": npy("<i4", [], struct.pack("<i", -7)),
    "npy_u32_2x1x2_v2": npy("<u4", [2, 1, 2], struct.pack("<4I", 0, 1, 2**32 - 1, 5), version=2),
    "npy_bool_3_v3": npy("|b1", [3], bytes([1, 0, 1]), version=3),
    "npy_f32_empty": npy("<f4", [0, 5], b""),
}
for name, data in seeds.items():
    (out / name).write_bytes(b"\x00" + data)

def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob

st = {
    "st_linear": safetensors({
        "fc.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))),
        "fc.bias": ("F32", [2], struct.pack("<2f", 0.5, -0.5)),
    }, {"format": "pt"}),
    "st_all_dtypes": safetensors({
        "a": ("F16", [2], struct.pack("<2e", 1, -1)),
        "b": ("I32", [1, 2], struct.pack("<2i", -3, 4)),
        "c": ("U32", [], struct.pack("<I", 9)),
        "d": ("BOOL", [3], bytes([0, 1, 1])),
        "e": ("F32", [0], b""),
    }),
    "st_unsupported": safetensors({
        "x": ("BF16", [2], b"\x80\x3f\x00\x40"),
        "y": ("I64", [1], struct.pack("<q", 5)),
        "z": ("F32", [1], struct.pack("<f", 2)),
    }),
    "st_empty": safetensors({}),
}
for name, data in st.items():
    (out / name).write_bytes(b"\x01" + data)
PY
echo "corpora: frontend $(ls corpus/frontend | wc -l), pipeline $(ls corpus/pipeline | wc -l), weights $(ls corpus/weights | wc -l) files"
