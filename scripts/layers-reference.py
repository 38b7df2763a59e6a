#!/usr/bin/env python3
"""Reference outputs from PyTorch for the layers of std/nn, one fixture per layer family.

For each model of tests/fixtures/layers/<name>.tdsl this builds the same layers in PyTorch (torch.nn modules
where one exists, with their own parameter names, so the keys are PyTorch's), draws seeded random weights and
inputs, runs them in float32 on the CPU and writes tests/fixtures/layers/<name>.safetensors with:

    input.<name>      every model input (float32 or int32)
    param.<key>       every param, keyed as the module's state_dict() (and tdsl's param keys)
    expected.<name>   every model output

Weights that modules initialise to constants (norm scales and shifts, running statistics) are drawn at random
too, so each is exercised. The integration test `layers_match_pytorch` (tests/integration/layers.rs) runs every
model on the reference interpreter and on the GPU with these inputs and params and compares every output.

Needs a Python with torch, numpy and safetensors:

    <venv with torch>/bin/python scripts/layers-reference.py
"""

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "layers"


def randomize(module):
    """Every float param and buffer drawn again (variances positive), so constants do not hide mistakes."""
    with torch.no_grad():
        for key, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif key.endswith(("weight", "bias", "running_mean")) and t.dim() == 1:
                t.copy_(torch.randn_like(t) * 0.5 + (1.0 if key.endswith("weight") else 0.0))


def write(name, inputs, expected, module=None, prefix=""):
    tensors = {f"input.{k}": v.detach().contiguous() for k, v in inputs.items()}
    if module is not None:
        for key, value in module.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue  # an int64 counter of training; inference does not read it
            tensors[f"param.{prefix}{key}"] = value.detach().contiguous()
    for key, value in expected.items():
        tensors[f"expected.{key}"] = value.detach().contiguous()
    save_file(tensors, str(OUT / f"{name}.safetensors"))
    print(f"{name}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in expected.items())}")


def rms_norm():
    torch.manual_seed(11)
    m = nn.ModuleDict({"norm": nn.RMSNorm(8)})
    randomize(m)
    x = torch.randn(2, 3, 8)
    y = m["norm"](x)
    y_eps = F.rms_norm(x, (8,), m["norm"].weight, eps=1e-6)
    write("rms_norm", {"x": x}, {"y": y, "y_eps": y_eps}, m)


def linear_no_bias():
    torch.manual_seed(12)
    m = nn.ModuleDict({"proj": nn.Linear(5, 6, bias=False)})
    x = torch.randn(2, 4, 5)
    write("linear_no_bias", {"x": x}, {"y": m["proj"](x)}, m)


def batch_norm2d():
    torch.manual_seed(13)
    m = nn.ModuleDict({"bn": nn.BatchNorm2d(4)})
    randomize(m)
    m.eval()
    x = torch.randn(2, 4, 3, 5)
    write("batch_norm2d", {"x": x}, {"y": m["bn"](x)}, m)


def group_norm():
    torch.manual_seed(14)
    m = nn.ModuleDict({"gn": nn.GroupNorm(3, 6), "ln": nn.GroupNorm(1, 6, eps=1e-6)})
    randomize(m)
    x = torch.randn(2, 6, 4, 3) * 2.0 + 0.5
    write("group_norm", {"x": x}, {"y": m["gn"](x), "y_one_group": m["ln"](x)}, m)


def conv2d():
    torch.manual_seed(15)
    m = nn.ModuleDict({
        "dilated": nn.Conv2d(3, 4, 3, padding=2, dilation=2),
        "strided": nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=2, bias=False),
        "grouped": nn.Conv2d(6, 4, 3, padding=1, groups=2),
        "depthwise": nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6),
    })
    x = torch.randn(2, 3, 7, 6)
    x6 = torch.randn(2, 6, 5, 5)
    write("conv2d", {"x": x, "x6": x6}, {
        "dilated": m["dilated"](x),
        "strided": m["strided"](x),
        "grouped": m["grouped"](x6),
        "depthwise": m["depthwise"](x6),
    }, m)


def conv_transpose2d():
    torch.manual_seed(16)
    m = nn.ModuleDict({
        "up": nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
        "plain": nn.ConvTranspose2d(4, 2, 2),
        "wide": nn.ConvTranspose2d(4, 3, 4, stride=3, padding=2),
    })
    x = torch.randn(2, 4, 3, 4)
    write("conv_transpose2d", {"x": x}, {"up": m["up"](x), "plain": m["plain"](x), "wide": m["wide"](x)}, m)


def pool_and_upsample():
    torch.manual_seed(17)
    x = torch.randn(2, 3, 5, 6) - 1.0  # mostly negative: a zero pad would win where -inf does not
    write("pool_upsample", {"x": x}, {
        "max_padded": F.max_pool2d(x, 3, stride=2, padding=1),
        "max_pad2": F.max_pool2d(x, 4, stride=1, padding=2),
        "nearest": F.interpolate(x, scale_factor=2, mode="nearest"),
        "bilinear2": F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
        "bilinear3": F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False),
    })


def activations():
    torch.manual_seed(18)
    x = torch.randn(4, 25) * 4.0
    x[0, :9] = torch.tensor([-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 7.5, -7.5])
    write("activations", {"x": x}, {
        "relu6": F.relu6(x),
        "hardtanh": F.hardtanh(x),
        "hardtanh_2": F.hardtanh(x, -2.0, 2.5),
        "hardsigmoid": F.hardsigmoid(x),
        "hardswish": F.hardswish(x),
        "leaky_relu": F.leaky_relu(x),
        "leaky_relu_2": F.leaky_relu(x, 0.2),
    })


def elementwise():
    torch.manual_seed(19)
    x = torch.randn(4, 25) * 3.0
    x[0, :8] = torch.tensor([float("nan"), 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 40.0])
    pos = x.abs() + 0.1
    pos[0, 0] = float("nan")
    pos[0, 1] = float("inf")
    small = torch.randn(4, 25) * torch.logspace(-8, 1, 25)
    small[0, :8] = torch.tensor([float("nan"), 0.0, -0.0, float("inf"), float("-inf"), -1.0, 100.0, -150.0])
    write("elementwise", {"x": x, "pos": pos, "small": small}, {
        "clamp": torch.clamp(x, -1.5, 2.0),
        "sign": torch.sign(x),
        "tan": torch.tan(x.clamp(-1.2, 1.2)),
        "exp2": torch.exp2(x.clamp(-20.0, 20.0)),
        "log2": torch.log2(pos),
        "log1p": torch.log1p(small),
        "expm1": torch.expm1(small),
    })


def index_reductions():
    torch.manual_seed(23)
    nan, inf = float("nan"), float("inf")
    x = torch.randn(5, 8)
    x[0] = torch.tensor([1.0, 3.0, 2.0, 3.0, -1.0, 3.0, -1.0, 0.5])  # ties: the first maximum, first minimum
    x[1] = torch.tensor([0.5, nan, 2.0, nan, -4.0, 1.0, -4.0, 0.0])  # NaN: the first NaN for both
    x[2] = torch.tensor([-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf])  # all equal: position 0
    x[3] = torch.tensor([-0.0, 0.0, -inf, inf, 0.0, -0.0, inf, -inf])  # signed zeros tie, infinities
    x[4, 2] = x[4, 6] = 7.0  # a tie in column 2 vs 6 against the column maxima below
    x[:, 5] = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])  # a whole column of ties (axis 0)
    xi = torch.randint(-3, 4, (5, 8), dtype=torch.int32)  # small ints: many ties
    long = torch.randn(2, 1500)
    long[0, 700] = long[0, 1400] = 9.0
    long[1, 1499] = nan
    i32 = lambda t: t.to(torch.int32)  # noqa: E731 (tdsl indices are i32, torch's int64)
    write("index_reductions", {"x": x, "xi": xi, "long": long}, {
        "argmax_row": i32(torch.argmax(x, dim=-1)),
        "argmin_row": i32(torch.argmin(x, dim=1)),
        "argmax_col": i32(torch.argmax(x, dim=0)),
        "argmin_col": i32(torch.argmin(x, dim=0, keepdim=True)),
        "argmax_all": i32(torch.argmax(x)),
        "argmin_all": i32(torch.argmin(x)),
        "argmax_int": i32(torch.argmax(xi, dim=1)),
        "argmin_int": i32(torch.argmin(xi, dim=0)),
        "argmax_long": i32(torch.argmax(long * 2.0, dim=1)),
        "cumsum_row": torch.cumsum(x, dim=1),
        "cumsum_col": torch.cumsum(x, dim=0),
        "cumsum_int": torch.cumsum(xi, dim=-1, dtype=torch.int32),
        "cumsum_long": torch.cumsum(long, dim=1),
    })


class LlamaMLP(nn.Module):
    """HF transformers' LlamaMLP (hidden_act "silu", mlp_bias False)."""

    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def llama_mlp():
    torch.manual_seed(19)
    m = nn.ModuleDict({"mlp": LlamaMLP(8, 20)})
    x = torch.randn(2, 3, 8)
    write("llama_mlp", {"x": x}, {"y": m["mlp"](x)}, m)


def attention():
    torch.manual_seed(20)
    q = torch.randn(2, 4, 5, 8)
    k = torch.randn(2, 4, 7, 8)
    v = torch.randn(2, 4, 7, 6)
    kc = torch.randn(2, 4, 5, 8)
    vc = torch.randn(2, 4, 5, 6)
    mask_sl = torch.randn(5, 7)
    mask_bhsl = torch.randn(2, 4, 5, 7)
    sdpa = F.scaled_dot_product_attention
    write("attention", {"q": q, "k": k, "v": v, "kc": kc, "vc": vc, "mask_sl": mask_sl, "mask_bhsl": mask_bhsl}, {
        "plain": sdpa(q, k, v),
        "causal": sdpa(q, kc, vc, is_causal=True),
        "causal_long": sdpa(q, k, v, is_causal=True),
        "masked_sl": sdpa(q, k, v, attn_mask=mask_sl),
        "masked_bhsl": sdpa(q, k, v, attn_mask=mask_bhsl),
    })


def gqa():
    torch.manual_seed(21)
    q = torch.randn(2, 6, 5, 8)
    k = torch.randn(2, 2, 5, 8)
    v = torch.randn(2, 2, 5, 4)
    mask = torch.randn(2, 1, 5, 5)
    sdpa = F.scaled_dot_product_attention
    write("gqa", {"q": q, "k": k, "v": v, "mask": mask}, {
        "causal": sdpa(q, k, v, is_causal=True, enable_gqa=True),
        "masked": sdpa(q, k, v, attn_mask=mask, enable_gqa=True),
    })


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(position_ids, dim, base):
    """HF transformers' LlamaRotaryEmbedding.forward (default rope type, attention_scaling 1)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary_pos_emb(x, cos, sin):
    """HF transformers' apply_rotary_pos_emb for one tensor, unsqueeze_dim=1."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (x * cos) + (rotate_half(x) * sin)


def rope():
    torch.manual_seed(22)
    x = torch.randn(2, 3, 6, 8)
    positions = torch.stack([torch.arange(6), torch.tensor([0, 1, 2, 17, 40, 63])]).to(torch.int32)
    cos, sin = rope_tables(positions.long(), 8, 10000.0)
    cos5, sin5 = rope_tables(positions.long(), 8, 500000.0)
    write("rope", {"x": x, "positions": positions}, {
        "y": apply_rotary_pos_emb(x, cos, sin),
        "y_base": apply_rotary_pos_emb(x, cos5, sin5),
    })


def more_elementwise():
    torch.manual_seed(23)
    x = torch.randn(4, 25) * 3.0
    x[0, :12] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, float("nan"), float("inf"), float("-inf"), 0.0,
                              -0.0, 0.49999997])
    e = torch.rand(4, 25) * 3.0 - 1.0
    ids = torch.tensor([[0, 3, 5, 1], [2, 2, 4, 0]], dtype=torch.int32)
    write("more_elementwise", {"x": x, "e": e, "ids": ids}, {
        "round": torch.round(x),
        "atan": torch.atan(x),
        "isnan": torch.isnan(x).float(),
        "isinf": torch.isinf(x).float(),
        "isfinite": torch.isfinite(x).float(),
        "pow": torch.pow(x.abs(), e),
        "pow_scalar": torch.pow(x.abs(), 0.75),
        "one_hot": F.one_hot(ids.long(), 6).float(),
        "masked": torch.where(x > 0.0, x, float("-inf")),
        "nan_to_zero": torch.where(torch.isnan(x), 0.0, x),
    })


def adaptive_pool():
    torch.manual_seed(24)
    x = torch.randn(2, 3, 7, 5)
    x[0, 0, 0, 0] = float("inf")  # one window's average is inf; every window without it stays finite
    write("adaptive_pool", {"x": x}, {
        "to_3x2": F.adaptive_avg_pool2d(x, (3, 2)),
        "to_1x1": nn.AdaptiveAvgPool2d((1, 1))(x),
        "to_4x4": F.adaptive_avg_pool2d(x, (4, 4)),
        "same": F.adaptive_avg_pool2d(x, (7, 5)),
        "dropout": nn.Dropout(0.3).eval()(x).clone(),
    })


def lstm():
    """nn.LSTM (two layers, from zeros and from a given state; one layer batch_first) and nn.LSTMCell."""
    torch.manual_seed(23)
    m = nn.ModuleDict({
        "lstm": nn.LSTM(3, 4, num_layers=2),
        "bf": nn.LSTM(3, 4, batch_first=True),
        "cell": nn.LSTMCell(3, 4),
    })
    x, xb = torch.randn(5, 2, 3), torch.randn(2, 5, 3)
    h0, c0 = torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    xc, hx, cx = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        output, (h_n, c_n) = m["lstm"](x)
        output_state, (h_n_state, c_n_state) = m["lstm"](x, (h0, c0))
        output_bf, (h_n_bf, c_n_bf) = m["bf"](xb)
        h_cell, c_cell = m["cell"](xc, (hx, cx))
    write("lstm", {"x": x, "xb": xb, "h0": h0, "c0": c0, "xc": xc, "hx": hx, "cx": cx}, {
        "output": output, "h_n": h_n, "c_n": c_n,
        "output_state": output_state, "h_n_state": h_n_state, "c_n_state": c_n_state,
        "output_bf": output_bf, "h_n_bf": h_n_bf, "c_n_bf": c_n_bf,
        "h_cell": h_cell, "c_cell": c_cell,
    }, m)


def sort_scatter():
    """torch.gather / scatter_add / sort(stable=True) / argsort / topk with ties, NaN, infinities, both zeros."""
    torch.manual_seed(23)
    x = torch.randint(-4, 5, (4, 13)).float() / 2.0  # many ties
    x[0, :6] = torch.tensor([float("nan"), 0.0, -0.0, float("inf"), float("-inf"), float("nan")])
    x[1, 3:7] = torch.tensor([-0.0, 0.0, -0.0, 0.0])
    x[2] += torch.randn(13) * 1e-3  # a row without ties
    idx = torch.randint(0, 13, (4, 9))
    idx[0, :4] = 5  # the same target four times: added in order
    src = torch.randn(4, 9)
    cols = torch.randint(0, 4, (3, 13))
    csrc = torch.randn(3, 13)
    k = torch.randint(-3, 4, (4, 13))
    k[3, :2] = torch.tensor([torch.iinfo(torch.int32).max, torch.iinfo(torch.int32).min])
    k = k.to(torch.int32)
    i32 = lambda t: t.to(torch.int32)
    sorted_, order = torch.sort(x, dim=-1, stable=True)
    sorted_desc, order_desc = torch.sort(x, dim=-1, descending=True, stable=True)
    sorted0, _ = torch.sort(x, dim=0, stable=True)
    _, order0 = torch.sort(x, dim=0, descending=True, stable=True)
    top, top_idx = torch.topk(x, 5, dim=-1, largest=True, sorted=True)
    # torch.topk does not say in which order it returns tied elements (on the CPU it does not return lower
    # positions first); tdsl's topk is the stable descending sort's first k. Both pick the same values, so the
    # positions expected are the stable sort's, checked to hold exactly torch.topk's values.
    stable_idx = order_desc[:, :5]
    torch.testing.assert_close(top, torch.gather(x, 1, stable_idx), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(torch.gather(x, 1, top_idx), torch.gather(x, 1, stable_idx), rtol=0, atol=0,
                               equal_nan=True)
    print(f"sort_scatter: torch.topk orders {(top_idx != stable_idx).sum().item()} tied positions otherwise")
    top_idx = stable_idx
    ksorted, _ = torch.sort(k, dim=-1, descending=True, stable=True)
    write("sort_scatter", {"x": x, "idx": i32(idx), "src": src, "cols": i32(cols), "csrc": csrc, "k": k}, {
        "taken": torch.gather(x, 1, idx),
        "taken0": torch.gather(x, 0, cols),
        "added": x.scatter_add(1, idx, src),
        "added0": x.scatter_add(0, cols, csrc),
        "sorted": sorted_,
        "order": i32(order),
        "sorted_desc": sorted_desc,
        "order_desc": i32(order_desc),
        "sorted0": sorted0,
        "order0": i32(order0),
        "top": top,
        "top_idx": i32(top_idx),
        "ksorted": ksorted,
        "korder": i32(torch.argsort(k, dim=-1, stable=True)),
    })


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for make in [rms_norm, linear_no_bias, batch_norm2d, group_norm, conv2d, conv_transpose2d, pool_and_upsample,
                 activations, elementwise, index_reductions, llama_mlp, attention, gqa, rope, more_elementwise,
                 adaptive_pool, lstm, sort_scatter]:
        make()
