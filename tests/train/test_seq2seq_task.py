"""Seq2SeqTask: the teacher-forced loss by hand, padding changes nothing, the meter's exact
match against decoded strings, and an interrupted run resumes exactly."""

import math

import pytest
import torch

from layerwise.data import encode_pairs, number_words, pair_tokenizer, special_ids, split_pairs
from layerwise.errors import ConfigError, LayerwiseError
from layerwise.models import build
from layerwise.models.seq2seq import greedy_decode
from layerwise.train import CheckpointManager, PairBatches, Seq2SeqTask, TrainConfig, Trainer, read_records, sequence_matches


@pytest.fixture(scope="module")
def data():
    parts = split_pairs(number_words(240, seed=0, max_value=9999), val=0.1, test=0.1, seed=0)
    tok = pair_tokenizer(*parts)
    return parts, tok, [encode_pairs(p, tok) for p in parts]


def _model(tok, **kw):
    pad, bos, eos = special_ids(tok)
    torch.manual_seed(0)
    return build("seq2seq-tiny", src_vocab=tok.vocab_size, tgt_vocab=tok.vocab_size, pad_id=pad, bos_id=bos, eos_id=eos, **kw)


def test_loss_is_the_mean_token_nll_of_each_pair_computed_alone(data):
    """The padded batch's loss = the mean over real target tokens of -log p(token), each pair run
    through the model on its own, without any padding (so padding and masking change nothing)."""
    parts, tok, enc = data
    pad, bos, eos = special_ids(tok)
    model = _model(tok).double().eval()
    task = Seq2SeqTask(pad)
    batch = PairBatches(enc[0].tensors(), 6, pad, shuffle=False).batch(0)
    with torch.no_grad():
        loss, preds = task.loss(model, batch)
    assert preds is not None  # eval mode decodes for the meter
    nll, tokens = 0.0, 0
    for s, t in zip(parts.train.sources[:6], parts.train.targets[:6]):
        src = torch.tensor([tok.encode(s)])
        ids = tok.encode(t)
        tgt_in, tgt_out = torch.tensor([[bos, *ids]]), [*ids, eos]
        with torch.no_grad():
            logp = torch.log_softmax(model(src, tgt_in)[0], dim=-1)  # (T, V)
        nll -= sum(logp[i, y].item() for i, y in enumerate(tgt_out))
        tokens += len(tgt_out)
    assert task.count(batch) == tokens
    assert math.isclose(loss.item(), nll / tokens, rel_tol=1e-6)  # the loss is computed in float32


def test_batches_are_cut_to_their_longest_pair_and_the_loss_does_not_change(data):
    _, tok, enc = data
    pad = special_ids(tok)[0]
    full = enc[0].tensors()
    src = PairBatches(full, 8, pad, seed=1)
    model = _model(tok).eval()
    task = Seq2SeqTask(pad)
    b = src.batch(3)
    rows = src._epoch_order(0)[24:32]
    assert b[0].shape[1] == int(full[1][rows].max()) < full[0].shape[1]  # the batch's longest source, cut
    assert b[3].shape[1] == int((full[3][rows] != pad).sum(dim=1).max())  # and target (+ eos)
    assert bool((b[3][:, -1] != pad).any()) and bool((b[0][:, -1] != pad).any())  # nothing left to cut
    untrimmed = tuple(t[rows] for t in full)
    torch.testing.assert_close(task.loss(model, b)[0], task.loss(model, untrimmed)[0], rtol=1e-6, atol=1e-7)


def test_meter_exact_match_equals_decoded_strings(data):
    parts, tok, enc = data
    pad, bos, eos = special_ids(tok)
    model = _model(tok)
    cfg = TrainConfig(steps=60, batch_size=16, lr=1e-2, optimizer="adam", device="cpu", log_every=60)
    trainer = Trainer(model, Seq2SeqTask(pad), enc[0], None, cfg)
    trainer.fit()
    metrics = trainer.evaluate(enc[1])
    decoded = greedy_decode(model, enc[1].src, max_len=enc[1].tgt_out.shape[1], src_lengths=enc[1].src_lengths).tokens
    strings = []
    for row in decoded.tolist():
        row = row[: row.index(eos)] if eos in row else row
        strings.append(tok.decode([i for i in row if i != pad]))
    expected = sum(s == t for s, t in zip(strings, parts.val.targets)) / len(parts.val)
    assert 0 < expected < 1  # some right, some wrong: the comparison means something
    assert metrics["sequences"] == len(parts.val)
    assert metrics["exact_match"] == pytest.approx(expected, abs=1e-12)
    assert 0 <= metrics["token_accuracy"] <= 1 and metrics["tokens"] == int((enc[1].tgt_out != pad).sum())
    beam1 = Trainer(model, Seq2SeqTask(pad, search="beam", beam_size=1), None, None, cfg).evaluate(enc[1])
    assert beam1["exact_match"] == metrics["exact_match"]  # a beam of one is greedy


def test_sequence_matches_counts_end_markers_and_lengths():
    PAD = 0
    targets = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 2], [3, 2, 0, 0]])
    preds = torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 7, 2], [3, 2, 0, 0, 0]])  # row 2 runs past the target's end
    exact, correct = sequence_matches(preds, targets, PAD)
    assert exact.tolist() == [True, False, True] and correct.tolist() == [3, 3, 2]
    exact, correct = sequence_matches(torch.tensor([[5, 6], [5, 6], [3, 2]]), targets, PAD)  # no end marker at all
    assert exact.tolist() == [False, False, True] and correct.tolist() == [2, 2, 2]


CFG = dict(steps=12, batch_size=8, lr=3e-3, optimizer="adam", schedule="cosine", warmup_steps=2, eval_every=4,
           checkpoint_every=4, log_every=1, keep_last=3, clip_grad_norm=1.0, device="cpu")


def _log(run_dir, split):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s", "mfu")}
            for r in read_records(run_dir / "metrics.jsonl") if r["split"] == split]


def test_interrupted_then_resumed_seq2seq_run_logs_the_same_losses(data, tmp_path):
    _, tok, enc = data
    pad = special_ids(tok)[0]
    Trainer(_model(tok, dropout=0.2), Seq2SeqTask(pad), enc[0], enc[1], TrainConfig(**CFG, out_dir=str(tmp_path / "a"))).fit()

    class Kill(Exception):
        pass

    def kill_at_7(ev):
        if ev.kind == "step" and ev.step == 7:
            raise Kill

    cfg = TrainConfig(**CFG, out_dir=str(tmp_path / "b"))
    with pytest.raises(Kill):
        Trainer(_model(tok, dropout=0.2), Seq2SeqTask(pad), enc[0], enc[1], cfg, callback=kill_at_7).fit()
    assert CheckpointManager(tmp_path / "b" / "checkpoints").steps()[-1] == 4
    torch.manual_seed(99)  # the checkpoint restores the RNG (dropout masks)
    Trainer(_model(tok, dropout=0.2), Seq2SeqTask(pad), enc[0], enc[1], cfg).fit(resume=True)
    a, b = _log(tmp_path / "a", "train"), _log(tmp_path / "b", "train")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert a == b  # losses, learning rates and gradient norms: exactly equal
    va, vb = _log(tmp_path / "a", "val"), _log(tmp_path / "b", "val")
    assert len(va) == 3 and va == vb and all("exact_match" in r for r in va)


def test_bad_input_is_a_one_line_error(data):
    _, tok, enc = data
    pad = special_ids(tok)[0]
    with pytest.raises(ConfigError, match="--search: expected one of greedy, beam"):
        Seq2SeqTask(pad, search="sample")
    with pytest.raises(ConfigError, match="only for classification tasks"):
        Trainer(_model(tok), Seq2SeqTask(pad), enc[0], None, TrainConfig(steps=1, class_weights=True, device="cpu")).fit()
    with pytest.raises(LayerwiseError, match="expected EncodedPairs"):
        Trainer(_model(tok), Seq2SeqTask(pad), [1, 2, 3], None, TrainConfig(steps=1, device="cpu")).fit()
    with pytest.raises(LayerwiseError, match="is not an encoder–decoder"):
        Trainer(build("mlp-digits"), Seq2SeqTask(pad), enc[0], None, TrainConfig(steps=1, device="cpu")).fit()
