#!/usr/bin/env python3
"""Step-by-step PyTorch training references on scikit-learn's digits, for tdsl's training runs.

Trains two small models with two optimizers in float32 on the CPU, on exactly the batches tdsl's runtime
feeds (runtime/src/data.rs: `Dataset::split` and `Dataset::batches`, a Fisher-Yates shuffle driven by
SplitMix64, reproduced here bit for bit and checked against the orders pinned by data.rs's unit tests):

    (train, test) = digits.split(0.2, seed=0)                         # 1438 training, 359 test samples
    epoch e = 0, 1, ...: train.batches(64, shuffle=Some(e), drop_last=False)   # 22 batches of 64, one of 30

Models (default PyTorch init right after torch.manual_seed(0); param keys as named_parameters()):

    cnn   conv1 = Conv2d(1, 8, 3, padding=1) -> ReLU -> MaxPool2d(2)
          conv2 = Conv2d(8, 16, 3, padding=1) -> ReLU -> MaxPool2d(2)
          flatten [N, 16, 2, 2] -> [N, 64] (NCHW order) -> fc = Linear(64, 10)
    mlp   flatten [N, 1, 8, 8] -> [N, 64] -> fc1 = Linear(64, 64) -> ReLU -> fc2 = Linear(64, 10)

Loss: F.cross_entropy of the logits and the labels, the mean over the batch (the last, short batch too).
Optimizers: sgd = torch.optim.SGD(lr=0.05, momentum=0.9); adamw = torch.optim.AdamW(lr=0.003,
weight_decay=0.01); every other argument is torch's default.

For each model in (cnn, mlp) and optimizer in (sgd, adamw) it writes DIR/digits_<model>_<opt>.safetensors:

    init.<key>          the params before training
    losses              f32[50]: the loss of each of the first 50 steps (on the batch, before the update)
    step50.<key>        the params after 50 steps
    final.<key>         the params after EPOCHS epochs
    test_accuracy       f32[EPOCHS]: test-set accuracy (argmax of the logits) after each epoch
    test_loss           f32[EPOCHS]: mean cross-entropy over the test set after each epoch

and the run's settings as safetensors metadata (strings): model, optimizer, epochs, batch, lr, momentum or
weight_decay, split_fraction, split_seed, shuffle_seed, init_seed, threads, torch_version.

Details a port must match: MaxPool2d's gradient goes to the first maximum of its window in row-major order,
and only to it. Ties are common: conv1 gives exactly relu(bias) on the images' blank background, so about a
quarter of the first pool's windows tie (some at a positive value, where sending the gradient to every
maximum would count conv1.bias's share several times); the second pool's ties are all zeros, harmless as
ReLU's gradient at 0 is 0 in PyTorch. cross_entropy is log_softmax (max subtracted) and the mean negative
log-likelihood over the batch, labels as int64.

With --bench it trains nothing to disk and prints, for the cnn and the mlp with sgd at batch 64, one JSON line
each: PyTorch CPU training steps per second (forward, backward, optimizer step on real batches) with
--threads threads, the median over --runs steps after --warmup steps (and the 1-minute load average: other
work on the machine's cores slows torch's thread pool a lot, so bench on an idle machine).

Needs a Python with torch, numpy and safetensors (e.g. a venv outside the repository; the fixtures were
written with torch 2.15.0, numpy 2.4.6, safetensors 0.8.0) and the data from scripts/fetch-digits.sh:

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy safetensors
    digits=$(scripts/fetch-digits.sh | tail -n1)
    /tmp/torch/bin/python scripts/digits-reference.py --data "$digits"
    /tmp/torch/bin/python scripts/digits-reference.py --data "$digits" --bench

--data defaults to fetch-digits.sh's cache,
${TDSL_DIGITS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tdsl/digits}/digits.safetensors; --out defaults to
tests/fixtures/train. Deterministic: the same torch build and --threads give the same bytes (another thread
count moves the final params by up to about 1e-4, reductions summing in another order).
"""

import argparse
import json
import os
import statistics
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parent.parent

EPOCHS = 20  # the smallest of 20, 30, 40 where cnn + sgd reaches >= 97% test accuracy (98.9%)
BATCH = 64
SPLIT_FRACTION = 0.2
SPLIT_SEED = 0
LOGGED_STEPS = 50
SGD = {"lr": 0.05, "momentum": 0.9}
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
        got = shuffled(n, seed)
        print(f"shuffled({n}, {seed}) = {got}")
        assert got == want, f"shuffled({n}, {seed}) is {got}, data.rs pins {want}"
    r = SplitMix64(0)
    first = r.next_u64()
    print(f"SplitMix64(0).next_u64() = {first:#018x}")
    assert first == 0xE220A8397B1DCDAF, "SplitMix64's first value from seed 0"
    train, val = split(20, 0.25, 1)
    assert (len(train), len(val)) == (15, 5) and sorted(train + val) == list(range(20))


def cnn():
    return nn.ModuleDict({
        "conv1": nn.Conv2d(1, 8, 3, padding=1),
        "conv2": nn.Conv2d(8, 16, 3, padding=1),
        "fc": nn.Linear(64, 10),
    })


def cnn_forward(m, images):
    x = F.max_pool2d(F.relu(m["conv1"](images)), 2)
    x = F.max_pool2d(F.relu(m["conv2"](x)), 2)
    return m["fc"](torch.flatten(x, 1))


def mlp():
    return nn.ModuleDict({"fc1": nn.Linear(64, 64), "fc2": nn.Linear(64, 10)})


def mlp_forward(m, images):
    return m["fc2"](F.relu(m["fc1"](torch.flatten(images, 1))))


MODELS = {"cnn": (cnn, cnn_forward), "mlp": (mlp, mlp_forward)}


def optimizer(name, params):
    if name == "sgd":
        return torch.optim.SGD(params, **SGD)
    if name == "adamw":
        return torch.optim.AdamW(params, **ADAMW)
    raise ValueError(name)


def params(m, prefix):
    return {f"{prefix}.{k}": p.detach().clone().contiguous() for k, p in m.named_parameters()}


def save(path, tensors, metadata):
    """A safetensors file with its header in a fixed order (the metadata and the tensors sorted by name;
    safetensors' own writer orders the metadata at random), so a rerun writes the same bytes."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        assert t.dtype == torch.float32, (name, t.dtype)
        blob = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    tmp.replace(path)


def load(path):
    d = load_file(str(path))
    images, labels = d["images"], d["labels"]
    assert images.dtype == np.float32 and images.shape == (1797, 1, 8, 8), images.shape
    assert labels.dtype == np.int32 and labels.shape == (1797,), labels.shape
    train, test = split(len(labels), SPLIT_FRACTION, SPLIT_SEED)
    return (
        (torch.from_numpy(images[train]), torch.from_numpy(labels[train]).long()),
        (torch.from_numpy(images[test]), torch.from_numpy(labels[test]).long()),
    )


def train(model, opt_name, data, epochs):
    (x_train, y_train), (x_test, y_test) = data
    make, forward = MODELS[model]
    torch.manual_seed(0)
    m = make()
    opt = optimizer(opt_name, m.parameters())
    out = params(m, "init")
    losses, accuracy, test_loss = [], [], []
    step = 0
    for epoch in range(epochs):
        m.train()
        for rows in batch_rows(len(y_train), BATCH, seed=epoch):
            rows = torch.tensor(rows)
            loss = F.cross_entropy(forward(m, x_train[rows]), y_train[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step < LOGGED_STEPS:
                losses.append(loss.item())
            step += 1
            if step == LOGGED_STEPS:
                out.update(params(m, "step50"))
        m.eval()
        with torch.no_grad():
            logits = forward(m, x_test)
            accuracy.append((logits.argmax(1) == y_test).float().mean().item())
            test_loss.append(F.cross_entropy(logits, y_test).item())
    assert step >= LOGGED_STEPS, f"only {step} steps"
    out.update(params(m, "final"))
    out["losses"] = torch.tensor(losses, dtype=torch.float32)
    out["test_accuracy"] = torch.tensor(accuracy, dtype=torch.float32)
    out["test_loss"] = torch.tensor(test_loss, dtype=torch.float32)
    meta = {
        "model": model,
        "optimizer": opt_name,
        "epochs": str(epochs),
        "batch": str(BATCH),
        "drop_last": "false",
        "split_fraction": str(SPLIT_FRACTION),
        "split_seed": str(SPLIT_SEED),
        "shuffle_seed": "epoch (0-based)",
        "init_seed": "0",
        "threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
    }
    meta.update({k: str(v) for k, v in (SGD if opt_name == "sgd" else ADAMW).items()})
    return out, meta, step


def bench(data, warmup, runs):
    (x_train, y_train), _ = data
    for model in ("cnn", "mlp"):
        make, forward = MODELS[model]
        torch.manual_seed(0)
        m = make()
        opt = optimizer("sgd", m.parameters())
        batches = []
        epoch = 0
        while len(batches) < warmup + runs:
            batches += [torch.tensor(r) for r in batch_rows(len(y_train), BATCH, seed=epoch) if len(r) == BATCH]
            epoch += 1
        batches = [(x_train[r].contiguous(), y_train[r].contiguous()) for r in batches[:warmup + runs]]
        times = []
        for k, (x, y) in enumerate(batches):
            t0 = time.perf_counter()
            loss = F.cross_entropy(forward(m, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            if k >= warmup:
                times.append(t1 - t0)
        median = statistics.median(times)
        print(json.dumps({
            "model": model,
            "optimizer": "sgd",
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


def default_data():
    if os.environ.get("TDSL_DIGITS_DIR"):
        base = Path(os.environ["TDSL_DIGITS_DIR"])
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(cache) / "tdsl" / "digits"
    return base / "digits.safetensors"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="digits.safetensors (fetch-digits.sh)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "train")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", action="store_true", help="print training steps per second, write nothing")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    self_check()
    data = load(args.data)
    print(f"train {len(data[0][1])} samples, test {len(data[1][1])}; "
          f"first test rows {split(1797, SPLIT_FRACTION, SPLIT_SEED)[1][:10]}; "
          f"epoch 0's first batch starts {batch_rows(len(data[0][1]), BATCH, 0)[0][:10]}")
    if args.bench:
        # torch's defaults, as a user would train; the fixtures are the same with or without the flag below.
        bench(data, args.warmup, args.runs)
        return
    torch.use_deterministic_algorithms(True)

    args.out.mkdir(parents=True, exist_ok=True)
    for model in ("cnn", "mlp"):
        for opt_name in ("sgd", "adamw"):
            out, meta, steps = train(model, opt_name, data, args.epochs)
            path = args.out / f"digits_{model}_{opt_name}.safetensors"
            save(path, out, meta)
            acc = " ".join(f"{a:.4f}" for a in out["test_accuracy"].tolist())
            print(f"{path.name}: {steps} steps, first loss {out['losses'][0]:.6f}, "
                  f"loss 50 {out['losses'][-1]:.6f}, final test loss {out['test_loss'][-1]:.6f}")
            print(f"  test accuracy per epoch: {acc}")


if __name__ == "__main__":
    main()
