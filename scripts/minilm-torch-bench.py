#!/usr/bin/env python3
"""PyTorch CPU timing of the all-MiniLM-L6-v2 forward (sentence-transformers), to compare with tdsl's.

Times the model's whole sentence-transformers pipeline (BERT encoder -> mean pooling -> L2 normalize) on
token ids that are already built, so tokenisation is not timed, under torch.inference_mode():

    model({"input_ids": ..., "attention_mask": ..., "token_type_ids": ...})["sentence_embedding"]

Cases (B sentences of S tokens each, no padding):
    a) B = 32, S = 98
    b) B = 1,  S = 16

The token ids of a case, for a Rust port to build the same batch (b = 0..B-1, s = 0..S-1, all int32):
    input_ids[b][0]     = 101                                  ([CLS])
    input_ids[b][S - 1] = 102                                  ([SEP])
    input_ids[b][s]     = 1997 + (b * 7919 + s * 104729) % 28000    for 0 < s < S - 1
    attention_mask[b][s] = 1, token_type_ids[b][s] = 0
(ids 1997..29996 are ordinary word pieces of the 30522-entry vocabulary). The script prints the sum of the
ids of each case as a check.

Without the sentence-transformers package, the same pipeline is built from transformers' BertModel (mean
pooling over the attention mask, L2 normalisation).

Each case runs --warmup times untimed, then --runs timed; the median, fastest and slowest pass are printed
in milliseconds, with torch's intra-op thread count (--threads sets it; default: torch's own choice).

    dir=$(scripts/fetch-minilm.sh | tail -n1)
    /path/to/venv/bin/python scripts/minilm-torch-bench.py --model-dir "$dir"

--model-dir defaults to ${TDSL_MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/minilm}. Runs offline.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CASES = [(32, 98), (1, 16)]


def default_model_dir():
    if os.environ.get("TDSL_MINILM_DIR"):
        return Path(os.environ["TDSL_MINILM_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tdsl" / "minilm"


def bench_ids(batch, seq):
    """The documented token ids of a B x S case, as nested lists."""
    rows = []
    for b in range(batch):
        row = [101] + [1997 + (b * 7919 + s * 104729) % 28000 for s in range(1, seq - 1)] + [102]
        rows.append(row[:seq])
    return rows


def load_model(model_dir):
    """sentence-transformers' pipeline when the package is installed, else the same computation from
    transformers' BertModel: mean pooling over the attention mask, then L2 normalisation."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        import torch
        from transformers import BertModel

        bert = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()

        def forward(features):
            hidden = bert(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return {"sentence_embedding": torch.nn.functional.normalize(pooled, p=2, dim=1)}

        return forward
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=default_model_dir())
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    if not (args.model_dir / "model.safetensors").is_file():
        sys.exit(f"{args.model_dir}/model.safetensors not found: run scripts/fetch-minilm.sh first")

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, warmup {args.warmup}, runs {args.runs}")
    for batch, seq in CASES:
        rows = bench_ids(batch, seq)
        ids = torch.tensor(rows, dtype=torch.int64)
        features = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
        }
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + args.runs):
                start = time.perf_counter()
                out = model(dict(features))["sentence_embedding"]
                elapsed = (time.perf_counter() - start) * 1e3
                if i >= args.warmup:
                    times.append(elapsed)
        assert out.shape == (batch, 384)
        print(f"batch {batch:2d} x {seq:3d} tokens (ids sum {sum(map(sum, rows))}): "
              f"median {statistics.median(times):.2f} ms (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
