#!/usr/bin/env python3
"""Every param gradient of all-MiniLM-L6-v2 on its real weights: tdsl against torch.autograd.

The loss is the dot product of the sentence embeddings (mean pooling over the attention mask, L2
normalisation) with a fixed random probe, for a batch of seeded token ids with padding. tdsl computes it with
scripts/minilm_grad.tdsl (`grad(loss)` outputs) through `tdslc run --weights` on the GPU (or, with
--reference, on the reference interpreter); PyTorch computes the same network from the same safetensors
weights in float32. For every param the script prints the largest difference relative to the gradient's
largest magnitude (at least 1e-4 of the model's largest gradient), and fails if any exceeds --tolerance.

Needs a Python with torch, numpy and safetensors, the weights from scripts/fetch-minilm.sh and a release
build of tdslc:

    cargo build --release --bin tdslc
    /path/to/venv/bin/python scripts/minilm-grad-reference.py [--reference]
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
D, HEADS, FFN, LAYERS = 384, 12, 1536, 6


def default_model_dir():
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(os.environ.get("TDSL_MINILM_DIR", Path(cache) / "tdsl" / "minilm"))


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-12)


def torch_loss(p, ids, mask, types, probe):
    b, s = ids.shape
    positions = torch.arange(s).expand(b, s)
    x = (p["embeddings.word_embeddings.weight"][ids.long()] + p["embeddings.position_embeddings.weight"][positions]
         + p["embeddings.token_type_embeddings.weight"][types.long()])
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"])
    bias = (1.0 - mask.float()) * -3.4028234663852886e38
    dh = D // HEADS
    for i in range(LAYERS):
        pre = f"encoder.layer.{i}."
        lin = lambda t, name: F.linear(t, p[pre + name + ".weight"], p[pre + name + ".bias"])
        q = lin(x, "attention.self.query").reshape(b, s, HEADS, dh).permute(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(b, s, HEADS, dh).permute(0, 2, 3, 1)
        v = lin(x, "attention.self.value").reshape(b, s, HEADS, dh).permute(0, 2, 1, 3)
        scores = q @ k / math.sqrt(dh) + bias.reshape(b, 1, 1, s)
        ctx = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3).reshape(b, s, D)
        x = layer_norm(x + lin(ctx, "attention.output.dense"), p[pre + "attention.output.LayerNorm.weight"],
                       p[pre + "attention.output.LayerNorm.bias"])
        h = F.gelu(lin(x, "intermediate.dense"))
        x = layer_norm(x + lin(h, "output.dense"), p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"])
    m = mask.float().reshape(b, s, 1)
    pooled = (x * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    emb = pooled / torch.clamp(pooled.norm(dim=-1, keepdim=True), min=1e-12)
    return (emb * probe).sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--tdslc", type=Path, default=ROOT / "target" / "release" / "tdslc")
    parser.add_argument("--reference", action="store_true", help="run tdsl on the reference interpreter")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest difference / gradient scale")
    args = parser.parse_args()

    torch.manual_seed(0)
    b, s = 2, 16
    ids = torch.randint(1000, 30000, (b, s), dtype=torch.int32)
    mask = torch.ones(b, s, dtype=torch.int32)
    mask[1, 11:] = 0
    types = torch.zeros(b, s, dtype=torch.int32)
    probe = torch.randn(b, D)

    weights = load_file(str(args.model_dir / "model.safetensors"))
    keep = {k: v.float().contiguous() for k, v in weights.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    params = {k: v.clone().requires_grad_(True) for k, v in keep.items()}
    loss = torch_loss(params, ids, mask, types, probe)
    loss.backward()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file({k: v.numpy() for k, v in keep.items()}, str(tmp / "weights.safetensors"))
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "probe": probe}
        command = [str(args.tdslc), "run", str(ROOT / "scripts" / "minilm_grad.tdsl"),
                   "--weights", str(tmp / "weights.safetensors"), "--output", str(tmp / "out")]
        for name, value in inputs.items():
            np.save(tmp / f"{name}.npy", value.numpy())
            command += ["--input", f"{name}={tmp / (name + '.npy')}"]
        if args.reference:
            command.append("--reference")
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        tdsl_loss = float(np.load(tmp / "out" / "loss.npy"))
        print(f"loss: tdsl {tdsl_loss:.7f}, torch {loss.item():.7f}")
        worst = 0.0
        rows = []
        # A gradient that is zero in exact arithmetic (the attention key biases: softmax ignores a constant
        # added to a row of scores) is rounding noise on both sides; it is measured against a floor of 1e-4
        # of the largest gradient of the model instead of its own scale.
        floor = 1e-4 * max(float(p.grad.abs().max()) for p in params.values())
        for key, p in params.items():
            got = np.load(tmp / "out" / f"grad.{key}.npy")
            want = p.grad.numpy()
            scale = max(float(np.abs(want).max()), floor)
            err = float(np.abs(got - want).max()) / scale
            rows.append((err, key, scale))
            worst = max(worst, err)
    for err, key, scale in sorted(rows, reverse=True)[:10]:
        print(f"  {key}: max |tdsl - torch| / max |torch| = {err:.2e} (scale {scale:.3e})")
    print(f"{len(rows)} param gradients; worst relative difference {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
