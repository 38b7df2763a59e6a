#!/usr/bin/env python3
"""Whole models against PyTorch: examples/gpt2.tdsl, examples/resnet18.tdsl and examples/llama.tdsl.

Without options, writes the fixtures of tests/integration/models.rs into tests/fixtures/models/:

    gpt2_tiny.safetensors, llama_tiny.safetensors
        HF transformers' GPT2LMHeadModel and LlamaForCausalLM in the reduced configurations of
        gpt2_tiny.tdsl and llama_tiny.tdsl (which call the examples' functions), every weight drawn at random
        (norm scales and shifts included): input.input_ids, param.<state_dict key>, expected.logits.
    resnet18-<N>x3x<H>x<W>.safetensors
        torchvision's resnet18 itself, on a [2, 3, 32, 32] batch and on one odd-sized [1, 3, 40, 56] image
        (adaptive average pooling over a 2x2 map): input.x and expected.logits only. Its 11.7 million weights
        are not stored: both sides make them from tdsl's seeded test data (`seeded_tensor`, SplitMix64 seeded
        with the seed xor the FNV-1a hash of the key, uniform in [-1, 1); reimplemented below), scaled by
        `resnet_param` (tests/integration/models.rs does the same).

With --bench, the full-size models instead (nothing is written to the repository): GPT-2 small with random
weights on token batches of 16 and 64, ResNet-18 on 1x3x224x224 and the Llama example on 64 tokens. Each is
run through `tdslc run --weights` on the GPU (the default Vulkan device: lavapipe where there is no other) with
the weights PyTorch used, its logits compared with PyTorch's, and timed: one forward pass on the GPU (`tdslc
bench --fused-only`, the median of its runs) next to PyTorch on the CPU with 2 threads (the median of 10).
Where the runtime refuses a model on the device (GPT-2 small's 154 MB token embedding is more than
lavapipe's 128 MiB storage buffers), the reference interpreter runs it for the comparison instead.

Needs a Python with torch, torchvision, transformers, numpy and safetensors:

    <venv with torch>/bin/python scripts/models-reference.py [--bench [gpt2] [resnet18] [llama]]
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "models"
TDSLC = ROOT / "target" / "release" / "tdslc"

# The seed of ResNet-18's weights in the fixtures (tests/integration/models.rs: RESNET_SEED).
RESNET_SEED = 16
MASK64 = (1 << 64) - 1


def seeded_tensor(name, shape, seed):
    """tdsl_runtime::random::seeded_tensor for f32: SplitMix64 from seed ^ fnv1a(name), (z >> 40) / 2^23 - 1."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    n = math.prod(shape)
    # SplitMix64 vectorised: state_i = start + i * gamma (mod 2^64), then the output mix.
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(seed ^ h) + gamma * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    unit = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 23) - np.float32(1.0)
    return torch.from_numpy(unit.reshape(shape))


def resnet_param(key, shape, seed):
    """ResNet-18's weight `key` from seeded data u in [-1, 1): a scale that keeps activations near 1 through
    the 18 layers (kaiming-like u sqrt(3 / fan_in) for convolutions and fc, so each has variance 1 / fan_in),
    positive running variances. Mirrors `resnet_param` in tests/integration/models.rs."""
    u = seeded_tensor(key, shape, seed)
    if key.endswith("running_var"):
        return 1.0 + 0.5 * u
    if key.endswith(("running_mean", "bias")):
        return 0.2 * u
    if len(shape) == 1:  # batch-norm scales
        return 1.0 + 0.2 * u
    fan_in = math.prod(shape[1:])
    return u * np.float32(math.sqrt(3.0 / fan_in))


def randomize(model, scale):
    """Every float param drawn again: matrices and embeddings normal(0, scale), norm scales 1 + normal(0,
    0.2), biases normal(0, 0.2), so no constant hides a swapped or missing weight."""
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.dim() == 1:
                base = 1.0 if key.endswith("weight") else 0.0
                t.copy_(base + 0.2 * torch.randn_like(t))
            else:
                t.copy_(scale * torch.randn_like(t))


def params(model, skip=()):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in skip}


def gpt2(vocab=50257, positions=1024, hidden=768, layers=12, heads=12):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=hidden, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                        attn_implementation="eager")
    return GPT2LMHeadModel(config).eval()


def llama(vocab=32000, hidden=256, layers=4, heads=8, kv_heads=2, ffn=688):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-6,
                         max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


def resnet18(seed=None):
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    if seed is not None:
        with torch.no_grad():
            for key, t in model.state_dict().items():
                if t.is_floating_point():
                    t.copy_(resnet_param(key, tuple(t.shape), seed))
    return model


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# GPT-2 keeps no copy of the tied head; the tdsl model reads transformer.wte.weight for it.
GPT2_SKIP = ("lm_head.weight",)


def write_fixtures():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(16)
    m = gpt2(vocab=64, positions=16, hidden=16, layers=2, heads=4)
    randomize(m, 0.3)
    ids = torch.randint(0, 64, (2, 7), dtype=torch.int32)
    save_file({"input.input_ids": ids, **{f"param.{k}": v for k, v in params(m, GPT2_SKIP).items()},
               "expected.logits": logits_of(m, ids.long()).contiguous()}, str(OUT / "gpt2_tiny.safetensors"))

    torch.manual_seed(17)
    m = llama(vocab=64, hidden=32, layers=2, heads=4, kv_heads=2, ffn=48)
    randomize(m, 0.3)
    ids = torch.randint(0, 64, (2, 7), dtype=torch.int32)
    save_file({"input.input_ids": ids, **{f"param.{k}": v for k, v in params(m).items()},
               "expected.logits": logits_of(m, ids.long()).contiguous()}, str(OUT / "llama_tiny.safetensors"))

    torch.manual_seed(18)
    m = resnet18(RESNET_SEED)
    for shape in [(2, 3, 32, 32), (1, 3, 40, 56)]:
        x = torch.randn(shape)
        with torch.no_grad():
            y = m(x)
        name = "x".join(map(str, shape))
        save_file({"input.x": x, "expected.logits": y.contiguous()}, str(OUT / f"resnet18-{name}.safetensors"))
        print(f"resnet18 {shape}: logits max |y| {y.abs().max():.3f}")
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.safetensors"))))


def torch_time(fn, repeat=10):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# What the runtime says before running a model this device cannot run (a tensor larger than its storage
# buffers; a kernel whose invocations would loop longer than llvmpipe runs them).
REFUSALS = ("bytes per storage buffer", "more than this device runs per invocation")


def tdslc(*args, refusal_ok=False):
    """tdslc's stdout; None where `refusal_ok` and the runtime refused the model on this device."""
    run = subprocess.run([str(TDSLC), *map(str, args)], capture_output=True, text=True)
    if run.returncode != 0:
        if refusal_ok and any(r in run.stderr for r in REFUSALS):
            print(f"   not on this GPU: {run.stderr.strip().splitlines()[-1]}")
            return None
        sys.exit(f"tdslc {' '.join(map(str, args))} failed:\n{run.stderr}")
    return run.stdout


def bench_one(name, example, model, inputs, dims, forward, tmp, skip=(), repeat=5):
    weights = tmp / f"{name}.safetensors"
    save_file(params(model, skip), str(weights))
    args = ["run", example, "--weights", weights, "--output", tmp / name]
    for key, value in inputs.items():
        np.save(tmp / f"{name}.{key}.npy", value.numpy())
        args += ["--input", f"{key}={tmp / f'{name}.{key}.npy'}"]
    # GPT-2 small's token embedding (154 MB) is more than lavapipe's 128 MiB storage buffers: where the GPU
    # refuses the model, the interpreter (the definition of every op) runs it instead.
    side = "GPU"
    if tdslc(*args, refusal_ok=True) is None:
        side = "interpreter"
        start = time.perf_counter()
        tdslc(*args, "--reference")
        print(f"   tdslc run --reference (compile, load and run): {time.perf_counter() - start:.1f} s")
    got = torch.from_numpy(np.load(tmp / name / "logits.npy"))
    with torch.no_grad():
        want = forward()
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    torch_s = torch_time(lambda: torch.no_grad()(forward)())
    print(f"== {name} ({', '.join(dims)}), on the {side}: max |logit| {scale:.4g}, worst |tdsl - torch| "
          f"{err:.3g} ({err / scale:.3g} of the scale); PyTorch CPU, {torch.get_num_threads()} threads: "
          f"{torch_s * 1e3:.1f} ms per forward pass")
    if side == "GPU":
        dim_args = sum((["--dim", d] for d in dims), [])
        print(tdslc("bench", example, "--fused-only", "--repeat", str(repeat), *dim_args), flush=True)
    return err, scale


def bench(only):
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="tdsl-models-"))
    torch.manual_seed(0)
    if "gpt2" in only:
        m = gpt2()
        for seq in [16, 64]:
            ids = torch.randint(0, 50257, (1, seq), dtype=torch.int32)
            bench_one(f"gpt2-s{seq}", ROOT / "examples" / "gpt2.tdsl", m, {"input_ids": ids}, ["B=1", f"S={seq}"],
                      lambda: m(input_ids=ids.long()).logits, tmp, GPT2_SKIP)
    if "resnet18" in only:
        m = resnet18()
        with torch.no_grad():  # a trained network's statistics are not 0 and 1: draw them, as the fixtures do
            for key, t in m.state_dict().items():
                if key.endswith("running_var"):
                    t.copy_(0.5 + torch.rand_like(t))
                elif key.endswith("running_mean"):
                    t.copy_(0.2 * torch.randn_like(t))
        counters = tuple(k for k in m.state_dict() if k.endswith("num_batches_tracked"))
        x = torch.randn(1, 3, 224, 224)
        # lavapipe takes seconds per forward pass of ResNet-18's direct convolutions: one timed run
        bench_one("resnet18-224", ROOT / "examples" / "resnet18.tdsl", m, {"x": x}, ["N=1", "H=224", "W=224"],
                  lambda: m(x), tmp, counters, repeat=1)
    if "llama" in only:
        m = llama()
        ids = torch.randint(0, 32000, (1, 64), dtype=torch.int32)
        bench_one("llama-s64", ROOT / "examples" / "llama.tdsl", m, {"input_ids": ids}, ["B=1", "S=64"],
                  lambda: m(input_ids=ids.long()).logits, tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", nargs="*", metavar="MODEL", choices=["gpt2", "resnet18", "llama"],
                        help="full-size comparisons and timings instead (of every model, or those named)")
    args = parser.parse_args()
    if args.bench is not None:
        bench(args.bench or ["gpt2", "resnet18", "llama"])
    else:
        write_fixtures()
