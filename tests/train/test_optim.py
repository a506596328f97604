"""Optimizer factory and schedules; schedules are checked against torch's own schedulers."""

import pytest
import torch
from torch import nn

from layerwise.errors import ConfigError
from layerwise.models import build
from layerwise.train.optim import LRSchedule, l1_penalty, make_optimizer, split_decay


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_on_matrices_only_not_embeddings_biases_norms():
    model = build("gpt-nano")
    decay, no_decay = split_decay(model)
    dn = _names(model, decay)
    expected = {f"transformer.h.{i}.{m}.weight" for i in range(3) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert dn == expected
    nn_ = _names(model, no_decay)
    assert "transformer.wte.weight" in nn_ and "transformer.wpe.weight" in nn_  # tied head = the embedding
    assert all(n.endswith(".bias") or ".ln_" in n or n.startswith(("transformer.wte", "transformer.wpe", "transformer.ln_f")) for n in nn_)
    # each parameter once, none lost
    assert len(decay) + len(no_decay) == len({id(p) for p in model.parameters()})
    untied = build("llama-nano")
    assert "lm_head.weight" in _names(untied, split_decay(untied)[0])


def test_only_trainable_parameters_are_optimised():
    model = build("gpt-nano")
    for p in model.parameters():
        p.requires_grad_(False)
    model.transformer.h[-1].mlp.c_fc.weight.requires_grad_(True)
    opt = make_optimizer(model, "adamw", weight_decay=0.1)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert params == [model.transformer.h[-1].mlp.c_fc.weight]
    model.transformer.h[-1].mlp.c_fc.weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer(model)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    lin = nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    opt = make_optimizer(lin, name, lr=0.05, nesterov=name == "sgd")
    first = None
    for _ in range(50):
        loss = ((lin(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    if name in ("sgd", "adagrad", "adam", "adamw"):
        assert opt.defaults.get("fused") is True  # torch's fused CPU kernel
    if name == "sgd":
        assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def _torch_lrs(scheduler_fn, lr, steps):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = scheduler_fn(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_and_linear_match_torch_schedulers():
    lr, lo, total = 3e-3, 1e-4, 50
    cos = LRSchedule("cosine", lr, total, 0, lo)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=lo), lr, total)
    assert [cos(s) for s in range(total)] == pytest.approx(ref, rel=1e-9)
    lin = LRSchedule("linear", lr, total, 0, lo)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, lo / lr, total_iters=total), lr, total)
    assert [lin(s) for s in range(total)] == pytest.approx(ref, rel=1e-9)
    assert LRSchedule("constant", lr, total)(total - 1) == lr


def test_warmup_then_cosine():
    lr, warm, total = 1e-3, 10, 60
    s = LRSchedule("cosine", lr, total, warm, 0.0)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / warm, 1.0, total_iters=warm - 1), lr, warm)
    assert [s(i) for i in range(warm)] == pytest.approx(ref, rel=1e-9)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warm), lr, total - warm)
    assert [s(i) for i in range(warm, total)] == pytest.approx(ref, rel=1e-9, abs=1e-15)
    with pytest.raises(ConfigError, match="warmup_steps"):
        LRSchedule("cosine", lr, 5, 6)


def test_l1_penalty_and_its_gradient():
    w = nn.Parameter(torch.tensor([[1.5, -2.0], [0.0, 3.0]]))
    pen = l1_penalty([w])
    assert pen.item() == pytest.approx(6.5)
    pen.backward()
    assert torch.equal(w.grad, torch.sign(w.detach()))
