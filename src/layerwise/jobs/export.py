"""``layerwise export RUN --to merged|hf|peft``: a fine-tuned (or any) run in a form other
tools load, and the reverse for PEFT adapters.

- ``merged``: LoRA folded into the base weights; ``model.safetensors`` + ``export.json``
  (our model config, task, data) + ``tokenizer.json``; :func:`layerwise.jobs.runs.load_run`
  reloads it. Bottleneck adapters are not linear and cannot be folded: refused.
- ``hf``: a directory ``transformers``' ``AutoModelFor…from_pretrained`` loads
  (``config.json`` + ``model.safetensors`` + ``tokenizer.json``): GPT-2 and Llama
  (``…ForCausalLM`` for language models, ``…ForSequenceClassification`` for classifiers,
  whose head has no bias) and BERT (``BertForSequenceClassification`` reads the [CLS]
  pooler: a mean-pooling classifier has no transformers class and is refused).
- ``peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` that
  ``peft.PeftModel.from_pretrained(hf_model, DIR)`` loads onto the transformers model of
  the base, which is written to ``DIR/base`` (``base_model_name_or_path``); the task head
  travels as PEFT's ``modules_to_save``. LoRA strategies only.

:func:`fold_peft_adapter` reads a PEFT LoRA adapter back and folds it into our model
(``layerwise finetune --model HF_DIR --adapter PEFT_DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.errors import ConfigError, LoadError
from layerwise.io import atomic_write_bytes, atomic_write_text

FORMATS = ("merged", "hf", "peft")


def _has(model: nn.Module, cls_name: str) -> bool:
    return any(type(m).__name__ == cls_name for m in model.modules())


def _merged_plain(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(a plain model of the same config, its state dict with LoRA folded in)."""
    from layerwise.finetune.checkpoint import merged_state_dict
    from layerwise.models.registry import build

    if _has(model, "AdaptedLinear"):
        raise ConfigError("export: bottleneck adapters are not linear, so they cannot be folded into the base weights "
                          "(--to merged/hf); the run directory itself reloads them (layerwise eval/predict RUN)")
    sd = merged_state_dict(model) if _has(model, "LoRALinear") else {k: v.detach().clone() for k, v in model.state_dict().items()}
    plain = build(model.config, device="cpu")
    plain.load_state_dict(sd, strict=True)
    return plain.eval(), plain.state_dict()


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    unique: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        if ptr in seen:  # tied weights: transformers re-ties them from the config
            continue
        seen.add(ptr)
        unique[k] = v.detach().cpu().contiguous()
    atomic_write_bytes(path, save(unique, metadata={"format": "pt", **(metadata or {})}))


def _copy_tokenizer(loaded, out: Path) -> None:
    if loaded.tokenizer is not None:
        loaded.tokenizer.save(out / "tokenizer.json")


def export_run(run: str | Path, to: str, out: str | Path, overwrite: bool = False) -> Path:
    """Export the model of run directory ``run`` (see the module docstring) into ``out``."""
    from layerwise.jobs.runs import EXPORT_FORMAT, load_run

    if to not in FORMATS:
        raise ConfigError(f"--to: expected one of {', '.join(FORMATS)}, got {to!r}")
    from layerwise.rundir import check_run, open_run

    check_run(out, "export", overwrite=overwrite)
    loaded = load_run(run)
    out = Path(out)
    info = {"from": str(Path(run).resolve()), "to": to}
    if to == "peft":
        if not _has(loaded.model, "LoRALinear"):
            raise ConfigError(f"--to peft: {run} was not trained with LoRA (strategy "
                              f"{loaded.recipe.get('strategy', 'full training')}); PEFT adapters hold LoRA factors only")
        if _has(loaded.model, "AdaptedLinear"):
            raise ConfigError("--to peft: the run also holds bottleneck adapters, which PEFT's LoRA format cannot carry")
        _hf_layout(loaded.model)  # refuses what transformers cannot load, before anything is written
        with open_run(out, "export", overwrite=overwrite, info=info):
            _write_peft(loaded, out)
        return out
    plain, sd = _merged_plain(loaded.model)
    if to == "merged":
        with open_run(out, "export", overwrite=overwrite, info=info):
            _write_tensors(out / "model.safetensors", sd)
            doc = {"format": EXPORT_FORMAT, "from": info["from"], "model": plain.config.to_dict(),
                   "task": loaded.task, "data": loaded.data, "strategy": loaded.recipe.get("strategy")}
            atomic_write_text(out / "export.json", json.dumps(doc, indent=2) + "\n")
            _copy_tokenizer(loaded, out)
        return out
    hf_config, hf_sd = _hf_layout(plain, sd)
    with open_run(out, "export", overwrite=overwrite, info=info):
        _write_hf(out, hf_config, hf_sd, loaded)
    return out


def _labels(loaded) -> dict[str, Any]:
    names = loaded.label_names
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def _hf_layout(model: nn.Module, sd: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(transformers config.json, state dict under transformers' names) of a plain model."""
    cfg = model.config
    family = getattr(cfg, "family", "")
    if family == "gpt":
        from layerwise.models.convert import gpt_config_to_hf, gpt_state_dict_to_hf, hf_model_type

        model_type = hf_model_type(cfg)
        hf = gpt_config_to_hf(cfg)
        if cfg.head == "classification":
            if cfg.score_bias:
                raise ConfigError("--to hf: the classification head has a bias; transformers' "
                                  f"{'GPT2' if model_type == 'gpt2' else 'Llama'}ForSequenceClassification has none "
                                  "(classifiers fine-tuned from a pretrained LM have none)")
            hf.update(architectures=["GPT2ForSequenceClassification" if model_type == "gpt2" else
                                     "LlamaForSequenceClassification"], num_labels=cfg.num_labels)
        if sd is None:
            return hf, {}
        body = {k: v for k, v in sd.items() if not k.startswith("score.")}
        if cfg.head == "classification":
            lm_cfg = cfg.replace(head="lm")
            out = gpt_state_dict_to_hf({**body, **({} if cfg.tie_embeddings else {"lm_head.weight": body["transformer.wte.weight"]})},
                                       lm_cfg, model_type)
            out.pop("lm_head.weight", None)
            out["score.weight"] = sd["score.weight"]
        else:
            out = gpt_state_dict_to_hf(body, cfg, model_type)
        return hf, out
    if family == "bert":
        from layerwise.models.bert_convert import bert_config_to_hf, bert_state_dict_to_hf

        if cfg.head == "sequence_classification" and cfg.classifier_pooling != "cls":
            raise ConfigError("--to hf: this BERT classifier mean-pools its tokens; transformers' "
                              "BertForSequenceClassification reads the [CLS] pooler, so no transformers class computes "
                              "the same logits (fine-tune with CLS pooling to export, or use --to merged)")
        return bert_config_to_hf(cfg), (bert_state_dict_to_hf(sd, cfg) if sd is not None else {})
    raise ConfigError(f"--to hf: the {family or type(model).__name__} family has no transformers counterpart here; "
                      "expected a GPT-2, Llama or BERT model (use --to merged)")


def _write_hf(out: Path, hf_config: dict, hf_sd: dict[str, torch.Tensor], loaded, pad_id: int | None = None) -> None:
    config = {**hf_config, **(_labels(loaded) if loaded.kind == "classification" else {})}
    if loaded.tokenizer is not None and config.get("model_type") in ("gpt2", "llama"):
        from layerwise.data.classification import pad_token_id

        config["pad_token_id"] = pad_token_id(loaded.tokenizer) if pad_id is None else pad_id
    _write_tensors(out / "model.safetensors", hf_sd)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    _copy_tokenizer(loaded, out)


def _hf_module_name(model: nn.Module, ours: str) -> str:
    """The transformers module path of our module ``ours`` (a LoRA target or the head)."""
    cfg = model.config
    if cfg.family == "gpt":
        from layerwise.models.convert import _ours_to_hf, hf_model_type

        if cfg.attn_qkv == "fused" and hf_model_type(cfg) == "llama":
            raise ConfigError("--to peft: LoRA on a fused q/k/v projection has no Llama counterpart (q, k and v are "
                              "separate there)")
        return next(iter(_ours_to_hf({f"{ours}.weight": torch.empty(0)}, cfg, hf_model_type(cfg)))).rsplit(".", 1)[0]
    from layerwise.models.bert_convert import _hf_name, _is_body

    name = _hf_name(f"{ours}.weight").rsplit(".", 1)[0]
    return ("bert." + name) if _is_body(name) and cfg.head != "none" else name


def _write_peft(loaded, out: Path) -> None:
    from layerwise.finetune.checkpoint import head_names
    from layerwise.finetune.lora import LoRALinear

    model = loaded.model
    cfg = model.config
    loras = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    ranks = {m.rank for m in loras.values()}
    alphas = {m.alpha for m in loras.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ConfigError("--to peft: the LoRA layers have different ranks or alphas; PEFT's config holds one of each")
    conv1d = cfg.family == "gpt" and cfg.attn_qkv == "fused" and getattr(cfg, "pos_embedding", "") == "learned"
    tensors: dict[str, torch.Tensor] = {}
    targets = set()
    for name, m in loras.items():
        hf = _hf_module_name(model, name)
        targets.add(hf.rsplit(".", 1)[-1])
        tensors[f"base_model.model.{hf}.lora_A.weight"] = m.lora_a.weight.detach().clone()
        tensors[f"base_model.model.{hf}.lora_B.weight"] = m.lora_b.weight.detach().clone()
    heads = sorted({n.rsplit(".", 1)[0] for n in head_names(model)})
    saved_heads = []
    for h in heads:
        module = model.get_submodule(h)
        hf = _hf_module_name(model, h)
        saved_heads.append(hf.rsplit(".", 1)[-1])
        for k, v in module.state_dict().items():
            tensors[f"base_model.model.{hf}.{k}"] = v.detach().clone()
    base_dir = out / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    # The base as transformers loads it: our model without the LoRA factors, the head as it
    # was before training (PEFT replaces it with modules_to_save).
    plain = _without_lora(model)
    hf_config, hf_sd = _hf_layout(plain, plain.state_dict())
    _write_hf(base_dir, hf_config, hf_sd, loaded)
    adapter_config = {
        "peft_type": "LORA", "task_type": "SEQ_CLS" if loaded.kind == "classification" else "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir.resolve()), "r": ranks.pop(), "lora_alpha": alphas.pop(),
        "lora_dropout": float(getattr(next(iter(loras.values())).lora_dropout, "p", 0.0)),
        "target_modules": sorted(targets), "modules_to_save": saved_heads if loaded.kind == "classification" else None,
        "fan_in_fan_out": conv1d, "bias": "none", "inference_mode": True, "init_lora_weights": True,
    }
    _write_tensors(out / "adapter_model.safetensors", tensors)
    atomic_write_text(out / "adapter_config.json", json.dumps(adapter_config, indent=2) + "\n")
    _copy_tokenizer(loaded, out)


def _without_lora(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with the LoRA factors dropped (not folded)."""
    from layerwise.finetune.checkpoint import is_added
    from layerwise.models.registry import build

    plain = build(model.config, device="cpu")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not is_added(k)}, strict=True)
    return plain.eval()


def fold_peft_adapter(model: nn.Module, path: Path) -> None:
    """Fold a PEFT LoRA adapter directory into ``model`` (our GPT or BERT, converted from the
    transformers base the adapter was trained on): W += (α/r)·B·A, and the adapter's saved
    head (``modules_to_save``) replaces ours."""
    from layerwise.train.checkpoint import read_safetensors

    cfg_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not cfg_file.is_file():
        if (path / "adapter_model.bin").is_file():
            raise LoadError(f"{path / 'adapter_model.bin'}: refusing a pickle adapter (unpickling can run arbitrary "
                            "code); save it with safe_serialization=True")
        raise LoadError(f"--adapter {path}: no adapter_config.json (a PEFT adapter directory)")
    conf = json.loads(cfg_file.read_text())
    if conf.get("peft_type") != "LORA":
        raise LoadError(f"--adapter {path}: peft_type {conf.get('peft_type')!r}; only LoRA adapters are supported")
    if conf.get("use_dora") or conf.get("use_rslora") or conf.get("rank_pattern") or conf.get("alpha_pattern"):
        raise LoadError(f"--adapter {path}: DoRA, rsLoRA and per-layer ranks are not supported")
    tensors = read_safetensors(weights)[0]
    scaling = float(conf["lora_alpha"]) / float(conf["r"])
    ours = {_hf_module_name(model, n): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    params = dict(model.named_parameters())
    used = set()
    with torch.no_grad():
        for key, a in tensors.items():
            if not key.endswith(".lora_A.weight"):
                continue
            hf = key[len("base_model.model."):-len(".lora_A.weight")]
            b = tensors.get(key.replace("lora_A", "lora_B"))
            if hf not in ours or b is None:
                raise LoadError(f"--adapter {path}: {hf} is not a Linear layer of this model (a different base?)")
            w = params[f"{ours[hf]}.weight"]
            delta = (b.float() @ a.float()) * scaling
            if tuple(delta.shape) != tuple(w.shape):
                raise LoadError(f"--adapter {path}: {hf} has shape {tuple(w.shape)}, the adapter's update {tuple(delta.shape)}")
            w.add_(delta.to(w.dtype))
            used |= {key, key.replace("lora_A", "lora_B")}
        for key, t in tensors.items():
            if key in used:
                continue
            hf_param = key[len("base_model.model."):]
            module, _, leaf = hf_param.rpartition(".")
            if module not in ours or f"{ours[module]}.{leaf}" not in params:
                raise LoadError(f"--adapter {path}: {hf_param} has no counterpart in this model")
            p = params[f"{ours[module]}.{leaf}"]
            if tuple(p.shape) != tuple(t.shape):
                raise LoadError(f"--adapter {path}: {hf_param} has shape {tuple(t.shape)}, the model's {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
