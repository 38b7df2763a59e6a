#!/usr/bin/env python3
"""Reference gradients from torch.autograd for the models of tests/fixtures/torch/*.tdsl.

For each model (an MLP with cross-entropy; a CNN with convolutions with stride and padding, batch norm, max and
average pooling; a BERT encoder layer with masked attention, layer norm and GELU; a reduced BERT of
examples/minilm/minilm.tdsl's architecture with the dot product of its embeddings and a fixed probe as the
loss), this builds the same network in PyTorch from a fixed seed, runs it in float32 on the CPU and writes
tests/fixtures/torch/<model>.safetensors with:

    input.<name>          every model input (float32 or int32)
    param.<key>           every param, keyed as PyTorch's named_parameters() (and tdsl's param keys)
    expected.loss         the loss
    expected.grad.<key>   d loss / d param, from loss.backward()

It also runs three torch.optim steps of SGD (momentum, dampening, Nesterov, weight decay), Adam and AdamW
and gradient clipping on one param (tests/fixtures/torch/optim.tdsl, std/optim), with the same file layout.

The integration test `torch_gradients_match` (tests/integration/grad.rs) runs the .tdsl model on the
reference interpreter and on the GPU with these inputs and params and compares every `grad.<key>` output.

Needs a Python with torch and safetensors (e.g. a venv outside the repository):

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch safetensors numpy
    /tmp/torch/bin/python scripts/grad-reference.py
"""

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch"


def perturb_norms(module):
    """LayerNorm and BatchNorm start at weight 1, bias 0; move them so their gradients are exercised."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))


def write(name, module, inputs, loss):
    module.zero_grad()
    loss.backward()
    tensors = {}
    for key, value in inputs.items():
        tensors[f"input.{key}"] = value.detach().contiguous()
    for key, p in module.named_parameters():
        tensors[f"param.{key}"] = p.detach().contiguous()
        tensors[f"expected.grad.{key}"] = p.grad.detach().contiguous()
    tensors["expected.loss"] = loss.detach().reshape(())
    save_file(tensors, str(OUT / f"{name}.safetensors"))
    print(f"{name}: loss {loss.item():.6f}, {sum(1 for _ in module.parameters())} params")


def mlp():
    torch.manual_seed(1)
    m = nn.ModuleDict({"fc1": nn.Linear(16, 32), "fc2": nn.Linear(32, 10)})
    x = torch.randn(8, 16)
    labels = torch.randint(0, 10, (8,), dtype=torch.int32)
    loss = F.cross_entropy(m["fc2"](F.relu(m["fc1"](x))), labels.long())
    write("mlp", m, {"x": x, "labels": labels}, loss)


def cnn():
    torch.manual_seed(2)
    m = nn.ModuleDict({
        "conv1": nn.Conv2d(1, 4, 3, padding=1),
        "bn": nn.BatchNorm2d(4),
        "conv2": nn.Conv2d(4, 6, 3, stride=2, padding=1),
        "fc": nn.Linear(6, 10),
    })
    perturb_norms(m)
    m.train()
    images = torch.randn(4, 1, 8, 8)
    labels = torch.randint(0, 10, (4,), dtype=torch.int32)
    x = m["conv1"](images)
    x = F.max_pool2d(F.relu(m["bn"](x)), 2, 2)
    x = F.relu(m["conv2"](x))
    x = F.avg_pool2d(x, 2, 2)
    loss = F.cross_entropy(m["fc"](x.reshape(4, 6)), labels.long())
    write("cnn", m, {"images": images, "labels": labels}, loss)


def attention(q, k, v, bias, heads):
    b, s, d = q.shape
    dh = d // heads
    qh = q.reshape(b, s, heads, dh).permute(0, 2, 1, 3)
    kt = k.reshape(b, s, heads, dh).permute(0, 2, 3, 1)
    vh = v.reshape(b, s, heads, dh).permute(0, 2, 1, 3)
    scores = qh @ kt / math.sqrt(dh) + bias.reshape(b, 1, 1, s)
    context = torch.softmax(scores, dim=-1) @ vh
    return context.permute(0, 2, 1, 3).reshape(b, s, d)


def mask_bias(mask):
    return (1.0 - mask.float()) * -3.4028234663852886e38


def encoder():
    torch.manual_seed(3)
    m = nn.ModuleDict({
        "attention": nn.ModuleDict({
            "query": nn.Linear(32, 32), "key": nn.Linear(32, 32), "value": nn.Linear(32, 32),
            "output": nn.Linear(32, 32), "norm": nn.LayerNorm(32, eps=1e-12),
        }),
        "ffn": nn.ModuleDict({"up": nn.Linear(32, 64), "down": nn.Linear(64, 32), "norm": nn.LayerNorm(32, eps=1e-12)}),
    })
    perturb_norms(m)
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.int32)
    probe = torch.randn(2, 5, 32)
    a, f = m["attention"], m["ffn"]
    ctx = attention(a["query"](x), a["key"](x), a["value"](x), mask_bias(mask), 4)
    h = a["norm"](x + a["output"](ctx))
    y = f["norm"](h + f["down"](F.gelu(f["up"](h))))
    loss = (y * probe).sum()
    write("encoder", m, {"x": x, "mask": mask, "probe": probe}, loss)


class BertLayer(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(d, d), "key": nn.Linear(d, d), "value": nn.Linear(d, d)}),
            "output": nn.ModuleDict({"dense": nn.Linear(d, d), "LayerNorm": nn.LayerNorm(d, eps=1e-12)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(d, ffn)})
        self.output = nn.ModuleDict({"dense": nn.Linear(ffn, d), "LayerNorm": nn.LayerNorm(d, eps=1e-12)})

    def forward(self, x, bias):
        s = self.attention["self"]
        ctx = attention(s["query"](x), s["key"](x), s["value"](x), bias, 4)
        o = self.attention["output"]
        x = o["LayerNorm"](x + o["dense"](ctx))
        h = F.gelu(self.intermediate["dense"](x))
        return self.output["LayerNorm"](x + self.output["dense"](h))


def bert():
    torch.manual_seed(4)
    d = 32
    m = nn.ModuleDict({
        "embeddings": nn.ModuleDict({
            "word_embeddings": nn.Embedding(50, d), "position_embeddings": nn.Embedding(16, d),
            "token_type_embeddings": nn.Embedding(2, d), "LayerNorm": nn.LayerNorm(d, eps=1e-12),
        }),
        "encoder": nn.ModuleDict({"layer": nn.ModuleList([BertLayer(d, 64) for _ in range(2)])}),
    })
    perturb_norms(m)
    b, s = 2, 6
    ids = torch.randint(0, 50, (b, s), dtype=torch.int32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.int32)
    types = torch.randint(0, 2, (b, s), dtype=torch.int32)
    probe = torch.randn(b, d)
    e = m["embeddings"]
    positions = torch.arange(s).expand(b, s)
    x = e["word_embeddings"](ids.long()) + e["position_embeddings"](positions) + e["token_type_embeddings"](types.long())
    x = e["LayerNorm"](x)
    bias = mask_bias(mask)
    for layer in m["encoder"]["layer"]:
        x = layer(x, bias)
    mf = mask.float().reshape(b, s, 1)
    pooled = (x * mf).sum(1) / torch.clamp(mf.sum(1), min=1e-9)
    emb = pooled / torch.clamp(pooled.norm(dim=-1, keepdim=True), min=1e-12)
    loss = (emb * probe).sum()
    write("bert", m, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "probe": probe}, loss)


def optim():
    """Three torch.optim steps of each optimizer on one param with given gradients (tests/fixtures/torch/optim.tdsl)."""
    torch.manual_seed(5)
    p0 = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(3)]
    lr = 0.1

    def run(make):
        p = torch.nn.Parameter(p0.clone())
        opt = make([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach().clone(), opt.state[p]

    sgd_p, sgd_state = run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, dampening=0.1, weight_decay=0.01))
    nesterov_p, _ = run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01))
    adam_p, adam_state = run(lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=0.01))
    adamw_p, _ = run(lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(0.8, 0.99), weight_decay=0.1))
    clip = torch.nn.Parameter(torch.zeros(4, 3))
    clip.grad = grads[0].clone()
    torch.nn.utils.clip_grad_norm_([clip], max_norm=0.5)
    def schedule(make, steps=12):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return torch.tensor(lrs, dtype=torch.float32)

    sched = torch.optim.lr_scheduler
    lr_step = schedule(lambda o: sched.StepLR(o, step_size=3, gamma=0.5))
    lr_cosine = schedule(lambda o: sched.CosineAnnealingLR(o, T_max=10, eta_min=0.001))
    lr_warmup = schedule(lambda o: sched.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4))
    tensors = {
        "input.t": torch.arange(12, dtype=torch.float32),
        "expected.lr_step": lr_step, "expected.lr_cosine": lr_cosine, "expected.lr_warmup": lr_warmup,
        "input.p": p0, "input.g1": grads[0], "input.g2": grads[1], "input.g3": grads[2],
        "input.lr": torch.tensor(lr), "input.s1": torch.tensor(1.0), "input.s2": torch.tensor(2.0),
        "input.s3": torch.tensor(3.0),
        "expected.sgd_p": sgd_p, "expected.sgd_buf": sgd_state["momentum_buffer"], "expected.nesterov_p": nesterov_p,
        "expected.adam_p": adam_p, "expected.adam_m": adam_state["exp_avg"], "expected.adam_v": adam_state["exp_avg_sq"],
        "expected.adamw_p": adamw_p, "expected.clipped": clip.grad,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "optim.safetensors"))
    print(f"optim: {len(tensors)} tensors")


if __name__ == "__main__":
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    mlp()
    cnn()
    encoder()
    bert()
    optim()
