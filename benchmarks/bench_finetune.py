"""Fine-tuning speed against the peers, measured side by side in one process.

1. LoRA (r=8 on query and value, batch 32 × 64 tokens) training steps of our
   minilm-l6 against transformers' BertForSequenceClassification + PEFT on the same
   packaged weights, alternating step by step, both in train mode (dropout 0.1 as the
   checkpoint's config says). Two inputs, the same tensors for both: random ids with
   no padding, and real sms-spam batches encoded with the model's tokenizer and padded
   to 64, as `layerwise finetune --max-len 64` feeds them (our Bert then skips the
   padding; transformers computes it). Target: ≥ 1.3× examples/s.
2. Head-only and top-2 fine-tuning on sms-spam (the 3,870-message training split, padded
   to 64), with and without the frozen-prefix cache, the cache's own time included:
   one epoch, and head-only over three epochs, where the cache (built in the first)
   is reused. Target: ≥ 3× for head-only. Note that the uncached run skips padding
   too (our Bert runs real tokens only), so the cache's gain is the frozen encoder's
   forward it saves, not padding.

3. With ``--smollm2``: LoRA r=8 (q_proj, v_proj) steps of the packaged SmolLM2-135M
   classifier on real sms-spam batches padded to 64: ours unpadded (the default), ours
   forced to the padded computation (trailing all-padding columns still trimmed), and
   transformers' LlamaForSequenceClassification + PEFT with the same weights, targets,
   rank and batches (it pools the last non-pad token as ours does), alternating.

Run: .venv/bin/python benchmarks/bench_finetune.py [--steps 20] [--threads 2] [--smollm2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402


def sms_batches(n_batches: int, batch: int, seq: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The first n_batches × batch sms-spam messages, encoded and padded to exactly ``seq`` tokens."""
    from layerwise.data import encode_classification, load_dataset
    from layerwise.data.tokenizers import load_tokenizer
    from layerwise.pretrained import minilm_l6_files

    ds = load_dataset("sms-spam")
    enc = encode_classification(ds.subset(range(n_batches * batch)), load_tokenizer(minilm_l6_files()["tokenizer"]), seq)
    pad = seq - enc.ids.shape[1]
    ids = torch.nn.functional.pad(enc.ids, (0, pad), value=enc.pad_id)
    mask = torch.nn.functional.pad(enc.attention_mask, (0, pad))
    return [(ids[i:i + batch], mask[i:i + batch], enc.labels[i:i + batch]) for i in range(0, n_batches * batch, batch)]


def lora_steps(steps: int, batch: int = 32, seq: int = 64, data: str = "random") -> dict:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    from layerwise.finetune import apply_strategy
    from layerwise.pretrained import load_minilm_l6, minilm_l6_files

    ours, _ = load_minilm_l6(head="sequence_classification", num_labels=2, classifier_pooling="mean")
    apply_strategy(ours, "lora:8:16", lora_targets=["query", "value"])
    hf = BertForSequenceClassification.from_pretrained(str(minilm_l6_files()["dir"]), num_labels=2)
    peft = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                         task_type=TaskType.SEQ_CLS, lora_dropout=0.0))
    for m in (ours, peft):
        m.train()
    if data == "random":
        g = torch.Generator().manual_seed(0)
        x = torch.randint(1000, 20000, (batch, seq), generator=g)
        batches = [(x, torch.ones_like(x), torch.randint(0, 2, (batch,), generator=g))]
    else:
        batches = sms_batches(steps + 2, batch, seq)
    real = sum(int(m.sum()) for _, m, _ in batches) / sum(m.numel() for _, m, _ in batches)
    it_o, it_p = iter(range(10**9)), iter(range(10**9))
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    opt_p = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-3)

    def step_ours():
        x, mask, y = batches[next(it_o) % len(batches)]
        loss = torch.nn.functional.cross_entropy(ours(x, attention_mask=mask), y)
        opt_o.zero_grad(set_to_none=True)
        loss.backward()
        opt_o.step()

    def step_peft():
        x, mask, y = batches[next(it_p) % len(batches)]
        loss = peft(input_ids=x, attention_mask=mask, labels=y).loss
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    for _ in range(2):  # warm up both
        step_ours()
        step_peft()
    t_o, t_p = [], []
    for _ in range(steps):
        t = time.perf_counter()
        step_ours()
        t_o.append(time.perf_counter() - t)
        t = time.perf_counter()
        step_peft()
        t_p.append(time.perf_counter() - t)
    o, p = statistics.median(t_o), statistics.median(t_p)
    return {"real_tokens": real, "ours_ex_s": batch / o, "peft_ex_s": batch / p, "ratio": p / o,
            "trainable_ours": sum(q.numel() for q in ours.parameters() if q.requires_grad),
            "trainable_peft": peft.get_nb_trainable_parameters()[0]}


def cache_speedup(strategy: str, train_fraction: float, epochs: int = 1) -> dict:
    from layerwise.finetune import default_lr
    from layerwise.jobs.finetune import finetune
    from layerwise.train.config import TrainConfig

    out = {}
    for cache in (True, False):
        cfg = TrainConfig(epochs=epochs, batch_size=32, lr=default_lr(strategy), device="cpu", seed=0, log_every=1000)
        t = time.perf_counter()
        r = finetune("minilm-l6", "sms-spam", strategy, cfg, train_fraction=train_fraction, max_len=64,
                     cache="auto" if cache else False, val=0.0001, test=0.0001)
        out["cached" if cache else "uncached"] = {"seconds": time.perf_counter() - t, "train_s": r.train_seconds,
                                                  "cache": r.cache, "loss_first_last": (r.losses[0], r.losses[-1])}
    # the fixed cost (loading the model, tokenising) is the same in both; compare the training itself
    c = out["cached"]
    cached_s = c["train_s"] + (c["cache"]["seconds"] if c["cache"] else 0.0)
    out["speedup"] = out["uncached"]["train_s"] / cached_s
    return out


def smollm2_lora(rounds: int = 2, n_batches: int = 3) -> dict:
    import transformers
    from peft import LoraConfig, TaskType, get_peft_model

    import layerwise.models.gpt as gpt
    from layerwise.finetune import apply_strategy
    from layerwise.jobs.runs import gpt_classifier_from_lm
    from layerwise.models.convert import gpt_config_to_hf, gpt_state_dict_to_hf
    from layerwise.pretrained import load_smollm2

    lm, _ = load_smollm2()
    torch.manual_seed(0)
    ours = gpt_classifier_from_lm(lm, 2)
    apply_strategy(ours, "lora:8:16", lora_targets=["q_proj", "v_proj"])
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in gpt_config_to_hf(lm.config).items()
                                         if k not in ("model_type", "architectures")}, num_labels=2)
    data = sms_batches(n_batches, 32, 64)
    hf_cfg.pad_token_id = int(data[0][0][data[0][1] == 0][0])  # the pad id the batches use
    hf = transformers.LlamaForSequenceClassification(hf_cfg)
    body = {k: v for k, v in gpt_state_dict_to_hf(lm.state_dict(), lm.config).items() if k != "lm_head.weight"}
    missing, unexpected = hf.load_state_dict(body, strict=False)
    assert set(missing) == {"score.weight"} and not unexpected, (missing, unexpected)
    peft = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                         task_type=TaskType.SEQ_CLS, lora_dropout=0.0))
    del lm

    def stepper(model, hf_style: bool):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()

        def run() -> float:
            t = time.perf_counter()
            for x, mask, y in data:
                if hf_style:
                    loss = model(input_ids=x, attention_mask=mask, labels=y).loss
                else:
                    loss = model(x, y, attention_mask=mask).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return (time.perf_counter() - t) / len(data)

        return run

    run_ours, run_peft = stepper(ours, False), stepper(peft, True)
    original = gpt._right_padded_tokens

    def run_padded() -> float:
        gpt._right_padded_tokens = lambda mask: None  # our padded computation
        try:
            return run_ours()
        finally:
            gpt._right_padded_tokens = original

    runs = {"ours": run_ours, "ours padded": run_padded, "peft": run_peft}
    for f in runs.values():  # warm up
        f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for k in runs if r % 2 == 0 else reversed(list(runs)):
            times[k].append(runs[k]())
    best = {k: min(v) for k, v in times.items()}
    return {**best, "vs_peft": best["peft"] / best["ours"], "vs_padded": best["ours padded"] / best["ours"],
            "trainable_ours": sum(q.numel() for q in ours.parameters() if q.requires_grad),
            "trainable_peft": peft.get_nb_trainable_parameters()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--smollm2", action="store_true", help="also time SmolLM2-135M LoRA against transformers+PEFT")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    for data in ("random", "sms-spam"):
        r = lora_steps(args.steps, data=data)
        print(f"LoRA r=8 (q,v) minilm-l6, batch 32×64, {data} ({100 * r['real_tokens']:.0f}% real tokens): layerwise "
              f"{r['ours_ex_s']:.1f} ex/s, transformers+peft {r['peft_ex_s']:.1f} ex/s → {r['ratio']:.2f}× (target ≥ 1.3×); "
              f"trainable {r['trainable_ours']:,} vs {r['trainable_peft']:,} (PEFT's includes the classifier it adds "
              "to modules_to_save)")
    for s, epochs in (("head", 1), ("head", 3), ("top-2", 1)):
        c = cache_speedup(s, args.train_fraction, epochs)
        print(f"{s}, {epochs} epoch{'s' if epochs > 1 else ''}: with the frozen-prefix cache {c['cached']['train_s']:.1f} s training + "
              f"{c['cached']['cache']['seconds']:.1f} s caching, without {c['uncached']['train_s']:.1f} s → "
              f"{c['speedup']:.1f}× (target ≥ 3× for head-only)")

    if args.smollm2:
        r = smollm2_lora()
        print(f"smollm2-135m LoRA r=8 (q,v), sms-spam batches 32×64: layerwise {r['ours']:.2f} s/step, layerwise "
              f"padded {r['ours padded']:.2f} s/step, transformers+peft {r['peft']:.2f} s/step → {r['vs_peft']:.2f}× "
              f"over transformers+peft, {r['vs_padded']:.2f}× over our padded computation; trainable "
              f"{r['trainable_ours']:,} vs {r['trainable_peft']:,} (PEFT's includes the score head)")


if __name__ == "__main__":
    main()
