"""The trace's op handling against torch: FLOPs of contractions against FlopCounterMode,
operands by keyword, meta-device outputs against torch's own meta kernels, known values on
meta, shape-only uses, and failures (the input's, the model's on meta, and our own)."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.analysis import analyze
from layerwise.analysis.trace import _MetaShapes, einsum_flops, grouped_mm_flops
from layerwise.errors import ForwardFailure, InputShapeError, InternalError


def counted(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def test_einsum_flops_equal_flop_counter_on_random_equations():
    """Explicit and implicit outputs, ellipses, broadcast (size-1) labels, two to four operands."""
    rng = random.Random(0)
    checked = 0
    while checked < 400:
        letters = rng.sample("abcdefg", rng.randint(2, 6))
        sizes = {c: rng.randint(1, 4) for c in letters}
        terms = ["".join(rng.sample(letters, rng.randint(1, min(4, len(letters))))) for _ in range(rng.randint(2, 4))]
        used = sorted(set("".join(terms)))
        out = "".join(rng.sample(used, rng.randint(0, len(used))))
        explicit = rng.random() < 0.8
        shapes = [tuple(sizes[c] for c in t) for t in terms]
        if rng.random() < 0.2:
            terms = ["..." + t for t in terms]
            out = "..." + out
            shapes = [(2, 3) + s for s in shapes]
        eq = ",".join(terms) + ("->" + out if explicit else "")
        ops = [torch.randn(s) for s in shapes]
        try:
            ref = counted(lambda: torch.einsum(eq, *ops))
        except RuntimeError:  # an equation torch rejects
            continue
        assert einsum_flops(eq, shapes) == ref, (eq, shapes)
        checked += 1


def test_einsum_with_tupled_operands_and_tensordot_in_every_spelling():
    a, b = torch.randn(4, 3, 5), torch.randn(3, 5, 6)

    class M(nn.Module):
        def forward(self, a, b):
            x = torch.einsum("ijk,jkl->il", (a, b))  # operands as one tuple
            y = torch.einsum("ijk,jkl->il", [a, b])  # and as a list
            z = torch.tensordot(a, b, dims=2) + torch.tensordot(a, b, dims=([1, 2], [0, 1]))
            w = torch.tensordot(a, b, dims=torch.tensor([[1], [0]])).sum() + torch.tensordot(a=a, b=b, dims=2).sum()
            return x + y + z + w

    m = M()
    # five contractions of (4, 15) with (15, 6), and one of a's dim 1 with b's dim 0: (20, 3) with (3, 30)
    assert analyze(m, inputs=(a, b)).totals.flops_forward == counted(lambda: m(a, b)) == 5 * 2 * 4 * 15 * 6 + 2 * 20 * 3 * 30


def test_products_flop_counter_does_not_count_have_closed_forms():
    """aten.mv, aten.dot and aten._trilinear (bilinear) have no FlopCounterMode formula."""
    m_, v, x1, x2, w = torch.randn(6, 4), torch.randn(4), torch.randn(5, 3), torch.randn(5, 4), torch.randn(7, 3, 4)

    class M(nn.Module):
        def forward(self, m_, v, x1, x2, w):
            return torch.mv(m_, v).sum() + torch.dot(v, v) + F.bilinear(x1, x2, w).sum() + m_.mv(vec=v).sum()

    assert counted(lambda: M()(m_, v, x1, x2, w)) == 0
    a = analyze(M(), inputs=(m_, v, x1, x2, w))
    assert a.totals.flops_forward == 2 * (2 * 6 * 4) + 2 * 4 + (2 * 5 * 7 * 3 * 4 + 2 * 5 * 7 * 4)


@pytest.mark.parametrize("bias_kv,zero_attn", [(False, False), (True, False), (False, True), (True, True)])
def test_multihead_attention_key_length_grows_by_one_per_option(bias_kv, zero_attn):
    mha = nn.MultiheadAttention(16, 4, batch_first=True, add_bias_kv=bias_kv, add_zero_attn=zero_attn)
    x = torch.randn(2, 5, 16)
    a = analyze(mha, inputs=(x, x, x), )
    assert a.totals.flops_forward == counted(lambda: mha(x, x, x))
    S = 5 + int(bias_kv) + int(zero_attn)
    assert a.totals.attention_flops == 2 * (2 * 2 * 5 * S * 16)


def test_keyword_operands_count_like_positional_ones():
    x, w, b = torch.randn(3, 4, 8), torch.randn(8, 8), torch.randn(8)
    bias = torch.zeros(3, 4, 4)

    def positional(x):
        h = F.linear(x, w, b)
        h = torch.matmul(h, w)
        h = torch.addmm(b, h.reshape(-1, 8), w).view(3, 4, 8)
        s = torch.baddbmm(bias, h, h.transpose(1, 2))
        return torch.bmm(s, h) + torch.addbmm(b, h, h.transpose(1, 2) @ h).sum()

    def by_name(x):
        h = F.linear(input=x, weight=w, bias=b)
        h = torch.matmul(h, other=w)
        h = torch.addmm(b, mat1=h.reshape(-1, 8), mat2=w).view(3, 4, 8)
        s = bias.baddbmm(batch1=h, batch2=h.transpose(1, 2))
        return torch.bmm(s, mat2=h) + torch.addbmm(input=b, batch1=h, batch2=torch.matmul(h.transpose(1, 2), other=h)).sum()

    class M(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    a, b_ = analyze(M(positional), inputs=(x,)), analyze(M(by_name), inputs=(x,))
    # FlopCounterMode has no formula for aten.addbmm: its closed form, Σ_b (4×8)·(8×8), is added
    addbmm = 2 * 3 * 4 * 8 * 8
    assert a.totals.flops_forward == b_.totals.flops_forward == counted(lambda: positional(x)) + addbmm


def test_grouped_mm_layouts():
    S, K, N, G = 10, 4, 6, 3
    assert grouped_mm_flops(torch.empty(S, K), torch.empty(G, K, N)) == 2 * S * K * N  # rows split (experts)
    assert grouped_mm_flops(torch.empty(G, 5, K), torch.empty(G, K, N)) == 2 * G * 5 * K * N  # batched
    assert grouped_mm_flops(torch.empty(G, 5, K), torch.empty(K, 9)) == 2 * 5 * K * 9  # columns split
    assert grouped_mm_flops(torch.empty(5, K), torch.empty(K, N)) == 2 * 5 * K * N  # K split (weight gradient)


def _meta_cases():
    rng = random.Random(1)
    ops = {"add": torch.add, "mul": torch.mul, "sub": torch.sub, "div": torch.div, "pow": torch.pow,
           "__rsub__": torch.Tensor.__rsub__, "__rtruediv__": torch.Tensor.__rtruediv__, "maximum": torch.maximum,
           "neg": torch.neg, "rsqrt": torch.rsqrt, "cos": torch.cos, "silu": F.silu, "gelu": F.gelu, "exp": torch.exp}

    def tensor(shape, dtype):
        perm = list(range(len(shape)))
        rng.shuffle(perm)
        t = torch.empty([shape[p] for p in perm], dtype=dtype, device="meta").permute([perm.index(i) for i in range(len(shape))])
        if shape and rng.random() < 0.2:
            d = rng.randrange(len(shape))
            t = t.narrow(d, 0, max(1, t.shape[d] - 1))  # not dense
        return t.requires_grad_(rng.random() < 0.5) if t.is_floating_point() else t

    for _ in range(1500):
        name = rng.choice(list(ops))
        shape = [rng.choice([1, 2, 3, 4]) for _ in range(rng.randint(0, 4))]
        dt = rng.choice([torch.float32, torch.bfloat16, torch.float16, torch.int64])
        a = tensor(shape, dt)
        if name in ("neg", "rsqrt", "cos", "silu", "gelu", "exp"):
            yield name, ops[name], (a,)
            continue
        if rng.random() < 0.3 and name != "maximum":
            other = rng.choice([2, 0.5, True])
        else:
            tail = [1 if rng.random() < 0.3 else s for s in shape[rng.randint(0, len(shape)):]]
            other = tensor(tail, rng.choice([torch.float32, torch.bfloat16, dt]))
        yield name, ops[name], (a, other)
    for shapes, dim in ((((2, 3, 4), (2, 5, 4)), 1), (((4, 6), (4, 2)), -1)):
        ts = [torch.empty(s, device="meta") for s in shapes]
        yield "cat", torch.cat, (ts, dim)
        yield "cat", torch.cat, ([t.transpose(0, -1).contiguous().transpose(0, -1) for t in ts], dim)
    q = torch.empty(2, 4, 6, 8, device="meta", requires_grad=True)
    kv = torch.empty(2, 7, 2, 8, device="meta").transpose(1, 2)
    yield "scaled_dot_product_attention", F.scaled_dot_product_attention, (q, q, q)
    yield "layer_norm", F.layer_norm, (q, (8,), torch.empty(8, device="meta"), torch.empty(8, device="meta"))
    yield "rms_norm", F.rms_norm, (q, (8,))
    x = torch.empty(2, 4, 6, 8, device="meta")
    yield "scaled_dot_product_attention", F.scaled_dot_product_attention, (x, kv, kv, None, 0.0, True)
    yield "tril", torch.tril, (torch.ones(5, 5, dtype=torch.bool, device="meta"),)
    yield "triu", torch.triu, (torch.empty(2, 3, 4, device="meta"), 1)
    w = torch.empty(5, 8, device="meta", requires_grad=True)
    for inp in (x, q, torch.empty(8, device="meta")):
        yield "linear", F.linear, (inp, w)
        yield "linear", F.linear, (inp, w, torch.empty(5, device="meta"))
    for ids in (torch.zeros(3, 4, dtype=torch.long, device="meta"), torch.zeros(7, dtype=torch.int32, device="meta")):
        yield "embedding", F.embedding, (ids, w)
        yield "embedding", F.embedding, (ids, w.detach())


def test_meta_outputs_made_by_the_trace_equal_torchs_meta_kernels():
    """Shape, dtype, requires_grad, and strides wherever they matter (a size-1 dimension's stride never does)."""
    ms = _MetaShapes()
    checked = 0
    for name, fn, args in _meta_cases():
        kw = {"enable_gqa": True} if name == "scaled_dot_product_attention" and args[1].shape[1] != args[0].shape[1] else {}
        try:
            ref = fn(*args, **kw)
        except RuntimeError:
            continue
        ours = ms(name, args, kw)
        if ours is None:  # left to torch
            continue
        checked += 1
        eff = lambda t: tuple(st for st, n in zip(t.stride(), t.shape) if n != 1)  # noqa: E731
        assert (ours.shape, ours.dtype, ours.requires_grad, eff(ours)) == (ref.shape, ref.dtype, ref.requires_grad, eff(ref)), (
            name, [(tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args])
        if ours.requires_grad:
            ours.mul_(2)  # an output may be changed in place, as the real op's can
    assert checked > 900


def test_known_values_let_mask_checks_run_on_meta_and_unknown_ones_fail_clearly():
    class MaskCheck(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 8)

        def forward(self, ids):
            mask = torch.ones(ids.shape, device=ids.device)
            h = self.emb(ids)
            if mask.sum() == mask.numel() and (ids == 0).all():  # computed from constants and the input alone
                h = h * 2
            idx = (ids == 0).nonzero()[:, 1]  # a data-dependent shape, from known values
            return self.fc(h[:, idx])

    with torch.device("meta"):
        m = MaskCheck()
    a = analyze(m, input_shape=(2, 5))
    assert a.output_shape == [2, 10, 8] and a.depth.weight_depth == 2

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            h = self.fc(x)
            return h * 2 if h.sum() > 0 else h  # needs the weights' values

    with torch.device("meta"):
        b = Branchy()
    with pytest.raises(ForwardFailure, match=r"the model's own forward \(Branchy\) needs tensor values") as e:
        analyze(b, input_shape=(2, 8))
    assert not isinstance(e.value, InputShapeError)


def test_a_shape_only_use_does_not_lengthen_the_path():
    class Positions(nn.Embedding):
        def forward(self, like):  # reads its argument only for its shape (as BART's does)
            return super().forward(torch.arange(like.shape[1], device=like.device))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos, self.fc = nn.Embedding(20, 8), Positions(16, 8), nn.Linear(8, 2)

        def forward(self, ids):
            h = self.tok(ids)
            return self.fc(h + self.pos(h))

    assert analyze(M(), inputs=(torch.zeros(2, 5, dtype=torch.long),)).depth.weight_depth == 2


def test_a_bad_input_names_the_layer_and_the_shapes():
    m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(InputShapeError, match=r"input \[3, 8\] does not fit layer '2' \(Linear\): linear got tensors "
                                              r"of shapes \[\[3, 4\], \[2, 5\], \[2\]\]") as e:
        analyze(m, input_shape=(3, 8))
    partial = e.value.partial
    assert partial.failure["module"] == "2" and partial.failure["input_shapes"] == [[[3, 4]]]
    assert partial.row("0").output_shape == [3, 4] and partial.row("2").output_shape is None
    assert partial.totals.params == sum(p.numel() for p in m.parameters())  # the module tree's totals still hold


def test_an_internal_failure_of_the_trace_is_never_blamed_on_the_input(monkeypatch):
    from layerwise.analysis import trace as trace_module

    def broken(self, name, args, kwargs, out):
        if name == "linear":
            raise IndexError("tuple index out of range")

    monkeypatch.setattr(trace_module._Tracer, "_count", broken)
    m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(InternalError) as e:
        analyze(m, input_shape=(3, 8))
    msg = str(e.value)
    assert not isinstance(e.value, InputShapeError) and "\n" not in msg
    assert msg.startswith("internal tracing failure in layerwise") and "layer '0' (Linear), linear" in msg
    assert "IndexError: tuple index out of range" in msg and "does not fit" not in msg
