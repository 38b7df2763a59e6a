#!/usr/bin/env python3
"""A character-level language model's dataset and PyTorch training reference, for examples/charlm/charlm.tdsl.

Dataset: the bytes of spec/language.md as of commit 4303eac5 (read with `git show`, so later edits of the
spec do not change the data; --text takes another file), cut into windows of T + 1 = 33 bytes with stride T
(window k is bytes[32 k : 32 k + 33]); `ids` is each window's first 32 bytes and `targets` its last 32 (the
next byte at every position), both i32[N, 32]. 19493 bytes give N = 609 windows. The vocabulary is the 256
byte values (the text is ASCII: 90 of them occur), so no tokenizer is needed.

Model (float32, default PyTorch init right after torch.manual_seed(0); keys as named_parameters()):

    tok  = Embedding(256, 64), pos = Embedding(32, 64): x = tok(ids) + pos(0..T)
    layer: pre-norm transformer block (GPT-2's order)
        h = ln1(x) (LayerNorm(64), eps 1e-5)
        attn.query/key/value/output = Linear(64, 64); 4 heads of 16, scores q k^T / sqrt(16) plus -1e9
            above the diagonal (position i attends to j <= i), softmax over j
        x = x + attn.output(attention)
        x = x + ffn.down(gelu(ffn.up(ln2(x))))  (Linear(64, 256), exact erf GELU, Linear(256, 64))
    ln_f = LayerNorm(64), head = Linear(64, 256): logits [B, T, 256]
    loss = F.cross_entropy(logits as [B * T, 256], targets as [B * T]): the mean over all B * T positions

Training, on exactly the batches `tdslc train` feeds (runtime/src/data.rs: `Dataset::split`, then
`Dataset::batches`, a Fisher-Yates shuffle driven by SplitMix64, reproduced here as in
scripts/digits-reference.py):

    (train, val) = data.split(0.1, seed=0)                              # 548 training windows, 61 validation
    epoch e = 0, 1, ...: train.batches(32, shuffle=Some(e), drop_last=False)   # 17 batches of 32, one of 4
    torch.optim.AdamW(lr=0.003, weight_decay=0.01), every other argument torch's default

Writes DIR/charlm_data.safetensors (`ids`, `targets`; metadata: source file, commit, T, stride) and
DIR/charlm_adamw.safetensors:

    init.<key>       the params before training
    losses           f32[20]: the loss of each of the first 20 steps (on the batch, before the update)
    step20.<key>     the params after 20 steps
    val_loss         f32[EPOCHS]: mean cross-entropy over the validation windows after each epoch

and the run's settings as metadata (strings). tests/integration/charlm.rs checks tdsl against it; by hand:

    python - <<'PY'   # the init.* tensors without their prefix
    from safetensors.numpy import load_file, save_file
    d = load_file("tests/fixtures/train/charlm_adamw.safetensors")
    save_file({k[5:]: v for k, v in d.items() if k.startswith("init.")}, "/tmp/charlm_init.safetensors")
    PY
    tdslc train examples/charlm/charlm.tdsl --data tests/fixtures/train/charlm_data.safetensors \\
        --optimizer adamw --lr 0.003 --batch-size 32 --val-split 0.1 --epochs 5 \\
        --weights /tmp/charlm_init.safetensors --log-every 1 --metrics /tmp/charlm.jsonl

With --bench it writes nothing and prints one JSON line: PyTorch CPU training steps per second (forward,
backward, AdamW step on real batches of 32) with --threads threads, the median over --runs steps after
--warmup steps.

Needs a Python with torch, numpy and safetensors (the fixtures were written with torch 2.15.0, numpy 2.4.6,
safetensors 0.8.0 and 2 threads) and git:

    /tmp/torch/bin/python scripts/charlm-reference.py            # writes the two fixtures
    /tmp/torch/bin/python scripts/charlm-reference.py --bench
"""

import argparse
import json
import math
import os
import statistics
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent

TEXT = "spec/language.md"
TEXT_COMMIT = "4303eac597dbeb00d2f13d13d742ad9b41af4b09"  # the last commit that changed it when this was written
T = 32
VOCAB = 256
WIDTH = 64
HEADS = 4
FFN = 256
EPOCHS = 5
BATCH = 32
SPLIT_FRACTION = 0.1
SPLIT_SEED = 0
LOGGED_STEPS = 20
ADAMW = {"lr": 0.003, "weight_decay": 0.01}

MASK64 = (1 << 64) - 1


class SplitMix64:
    """runtime/src/random.rs's SplitMix64, with u64 wrapping arithmetic."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def shuffled(n, seed):
    """data.rs's `shuffled`: 0..n after a Fisher-Yates shuffle, i from n - 1 down to 1 swapped with
    next_u64() % (i + 1)."""
    order = list(range(n))
    rng = SplitMix64(seed)
    for i in range(n - 1, 0, -1):
        j = rng.next_u64() % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def split(n, fraction, seed):
    """data.rs's `Dataset::split`: (training rows, validation rows), each sorted; round(fraction * n) held
    out (Rust's f64::round, half away from zero)."""
    x = fraction * n
    held = int(np.floor(x + 0.5)) if x >= 0 else -int(np.floor(-x + 0.5))
    order = shuffled(n, seed)
    return sorted(order[held:]), sorted(order[:held])


def batch_rows(n, batch, seed, drop_last=False):
    """data.rs's `Dataset::batches` with shuffle = Some(seed): positions into the dataset, per batch."""
    order = shuffled(n, seed)
    chunks = [order[k:k + batch] for k in range(0, n, batch)]
    return [c for c in chunks if not drop_last or len(c) == batch]


def self_check():
    """The orders pinned by data.rs's test `the_shuffle_is_the_documented_fisher_yates`."""
    pinned = {(10, 3): [2, 8, 7, 4, 5, 6, 0, 1, 9, 3], (10, 0): [6, 3, 2, 9, 8, 1, 4, 7, 0, 5], (1, 5): [0]}
    for (n, seed), want in pinned.items():
        assert shuffled(n, seed) == want, f"shuffled({n}, {seed}) is {shuffled(n, seed)}, data.rs pins {want}"
    assert SplitMix64(0).next_u64() == 0xE220A8397B1DCDAF, "SplitMix64's first value from seed 0"


def windows(text):
    """(ids, targets), i32[N, T] each: windows of T + 1 bytes with stride T."""
    data = np.frombuffer(text, dtype=np.uint8).astype(np.int32)
    n = (len(data) - 1) // T
    rows = np.stack([data[k * T:k * T + T + 1] for k in range(n)])
    return np.ascontiguousarray(rows[:, :T]), np.ascontiguousarray(rows[:, 1:])


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Embedding(T, WIDTH)
        self.layer = nn.ModuleDict({
            "ln1": nn.LayerNorm(WIDTH),
            "attn": nn.ModuleDict({name: nn.Linear(WIDTH, WIDTH) for name in ("query", "key", "value", "output")}),
            "ln2": nn.LayerNorm(WIDTH),
            "ffn": nn.ModuleDict({"up": nn.Linear(WIDTH, FFN), "down": nn.Linear(FFN, WIDTH)}),
        })
        self.ln_f = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def attention(self, h):
        attn = self.layer["attn"]
        b, s, d = h.shape
        split_heads = lambda x: x.reshape(b, s, HEADS, d // HEADS).permute(0, 2, 1, 3)
        q, k, v = (split_heads(attn[name](h)) for name in ("query", "key", "value"))
        future = torch.triu(torch.full((s, s), -1e9), diagonal=1)  # -1e9 where j > i, else 0
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // HEADS) + future
        context = F.softmax(scores, dim=-1) @ v
        return attn["output"](context.permute(0, 2, 1, 3).reshape(b, s, d))

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        x = x + self.attention(self.layer["ln1"](x))
        ffn = self.layer["ffn"]
        x = x + ffn["down"](F.gelu(ffn["up"](self.layer["ln2"](x))))
        return self.head(self.ln_f(x))


def loss_of(m, ids, targets):
    return F.cross_entropy(m(ids).reshape(-1, VOCAB), targets.reshape(-1))


def params(m, prefix):
    return {f"{prefix}.{k}": p.detach().clone().contiguous().numpy() for k, p in m.named_parameters()}


def save(path, arrays, metadata):
    """A safetensors file with its header in a fixed order (the metadata and the tensors sorted by name), so a
    rerun writes the same bytes."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        dtype = {np.dtype(np.float32): ("F32", "<f4"), np.dtype(np.int32): ("I32", "<i4")}[a.dtype]
        blob = a.astype(dtype[1]).tobytes()
        header[name] = {"dtype": dtype[0], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    tmp.replace(path)


def read_text(args):
    if args.text is not None:
        return args.text.read_bytes(), str(args.text), "(a file, not from git)"
    out = subprocess.run(["git", "-C", str(REPO), "show", f"{TEXT_COMMIT}:{TEXT}"], check=True, capture_output=True)
    return out.stdout, TEXT, TEXT_COMMIT


def train(data, epochs):
    ids, targets = (torch.from_numpy(a).long() for a in data)
    rows_train, rows_val = split(len(ids), SPLIT_FRACTION, SPLIT_SEED)
    x_train, y_train = ids[rows_train], targets[rows_train]
    x_val, y_val = ids[rows_val], targets[rows_val]
    torch.manual_seed(0)
    m = CharLM()
    opt = torch.optim.AdamW(m.parameters(), **ADAMW)
    out = params(m, "init")
    losses, val_loss, step = [], [], 0
    for epoch in range(epochs):
        for rows in batch_rows(len(x_train), BATCH, seed=epoch):
            rows = torch.tensor(rows)
            loss = loss_of(m, x_train[rows], y_train[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step < LOGGED_STEPS:
                losses.append(loss.item())
            step += 1
            if step == LOGGED_STEPS:
                out.update(params(m, f"step{LOGGED_STEPS}"))
        with torch.no_grad():
            val_loss.append(loss_of(m, x_val, y_val).item())
        print(f"epoch {epoch + 1}: step {step}, last batch loss {loss.item():.4f}, val loss {val_loss[-1]:.4f}")
    out["losses"] = np.array(losses, dtype=np.float32)
    out["val_loss"] = np.array(val_loss, dtype=np.float32)
    meta = {
        "model": "charlm",
        "optimizer": "adamw",
        "epochs": str(epochs),
        "batch": str(BATCH),
        "drop_last": "false",
        "split_fraction": str(SPLIT_FRACTION),
        "split_seed": str(SPLIT_SEED),
        "shuffle_seed": "epoch (0-based)",
        "init_seed": "0",
        "threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        **{k: str(v) for k, v in ADAMW.items()},
    }
    return out, meta, (len(x_train), len(x_val))


def bench(data, warmup, runs):
    ids, targets = (torch.from_numpy(a).long() for a in data)
    rows_train, _ = split(len(ids), SPLIT_FRACTION, SPLIT_SEED)
    x_train, y_train = ids[rows_train], targets[rows_train]
    torch.manual_seed(0)
    m = CharLM()
    opt = torch.optim.AdamW(m.parameters(), **ADAMW)
    batches, epoch = [], 0
    while len(batches) < warmup + runs:
        batches += [torch.tensor(r) for r in batch_rows(len(x_train), BATCH, seed=epoch) if len(r) == BATCH]
        epoch += 1
    batches = [(x_train[r].contiguous(), y_train[r].contiguous()) for r in batches[:warmup + runs]]
    times = []
    for k, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        loss = loss_of(m, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if k >= warmup:
            times.append(t1 - t0)
    median = statistics.median(times)
    print(json.dumps({
        "model": "charlm",
        "optimizer": "adamw",
        "batch": BATCH,
        "threads": torch.get_num_threads(),
        "steps": runs,
        "warmup": warmup,
        "median_step_ms": round(median * 1e3, 4),
        "min_step_ms": round(min(times) * 1e3, 4),
        "steps_per_s": round(1.0 / median, 1),
        "torch": torch.__version__,
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", type=Path, help=f"the text to cut into windows (default: {TEXT} at {TEXT_COMMIT[:8]})")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "train")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", action="store_true", help="print training steps per second, write nothing")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    self_check()
    text, source, commit = read_text(args)
    data = windows(text)
    print(f"{source} ({len(text)} bytes, {len(set(text))} distinct): {len(data[0])} windows of {T} + 1 bytes")
    if args.bench:
        bench(data, args.warmup, args.runs)
        return
    torch.use_deterministic_algorithms(True)

    args.out.mkdir(parents=True, exist_ok=True)
    save(args.out / "charlm_data.safetensors", {"ids": data[0], "targets": data[1]},
         {"source": source, "commit": commit, "window": str(T + 1), "stride": str(T), "vocabulary": "bytes"})
    out, meta, (n_train, n_val) = train(data, args.epochs)
    size = sum(v.size for k, v in out.items() if k.startswith("init."))
    meta["params"] = str(size)
    save(args.out / "charlm_adamw.safetensors", out, meta)
    print(f"charlm: {size} params, {n_train} training windows, {n_val} validation; "
          f"losses {' '.join(f'{x:.5f}' for x in out['losses'])}")


if __name__ == "__main__":
    main()
