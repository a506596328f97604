"""`layerwise summary` works on every preset (on the meta device), and every preset with
a published count equals it."""

import pytest

from layerwise.analysis import analyze
from layerwise.models import build, list_presets

PRESETS = [p.name for p in list_presets()]


def test_there_are_presets_of_every_family():
    families = {p.family for p in list_presets()}
    assert families == {"mlp", "cnn", "rnn", "gpt", "bert", "seq2seq", "gan", "dqn"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_analyses_on_meta(name):
    preset = next(p for p in list_presets() if p.name == name)
    model = build(name, device="meta")
    # a short sequence keeps the trace cheap; the parameters do not depend on it
    kw = {"seq_len": 16} if preset.family in ("gpt", "bert", "rnn") else {}
    a = analyze(model, name=name, **kw)
    assert a.totals.params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in a.rows) == a.totals.params
    assert a.depth.weight_depth >= 1 and a.totals.flops_forward > 0
    if preset.reference_params is not None:
        assert a.totals.params == preset.reference_params, f"{name}: {a.totals.params:,} vs {preset.reference_params:,}"
    if preset.reference_active_params is not None:  # mixtures of experts: the parameters one token uses
        assert a.totals.active_params == preset.reference_active_params
    elif not a.kind("expert").params:
        assert a.totals.active_params == a.totals.params
