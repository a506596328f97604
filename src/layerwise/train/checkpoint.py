"""Checkpoints: safetensors + JSON, written atomically, never pickled.

A checkpoint is a directory::

    step-00000100/
      model.safetensors   weights (one entry per tensor; tied weights stored once, see below)
      state.safetensors   optimizer state tensors and RNG states
      state.json          step, train and model config, optimizer hyper-parameters,
                          schedule, RNG, loop state, and the sha256 of each file

Several models or optimizers (a GAN's generator and discriminator) are saved under
their own names: ``generator.safetensors``, ``discriminator.safetensors``, and the
optimizers' tensors in ``state.safetensors`` under ``optimizer/<name>/...``.

Atomicity: the whole directory is written under a temporary name (each file fsynced),
then renamed into place, so a reader sees either the old checkpoint or the complete new
one -- a full disk or a crash mid-write leaves the previous checkpoints untouched.

Tied weights: safetensors refuses tensors that share memory, so a parameter that
appears under several names (GPT-2's ``lm_head.weight`` = ``transformer.wte.weight``)
is stored once; the other names are recorded as aliases in the file's metadata and
filled back in on load (the model's own constructor ties the parameters again).

Loading never unpickles: ``.pt``/``.bin``/``.pth``/``.ckpt`` files are refused unless
``allow_pickle=True``, and even then read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.errors import LayerwiseError, LoadError
from layerwise.io import atomic_write_text, current_umask

FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(LayerwiseError):
    """A checkpoint could not be written (the previous ones are intact)."""


# ---------------------------------------------------------------- tensors <-> bytes


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _export(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors safe for safetensors, {alias: canonical name}) from a state dict."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: dict[int, int] = {}
    for t in tensors.values():
        if t.device.type != "meta" and t.numel():
            ptr = t.untyped_storage().data_ptr()
            storages[ptr] = storages.get(ptr, 0) + 1
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type == "meta":
            raise CheckpointError(f"cannot save {name!r}: it is on the meta device (no data)")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        shared = t.numel() and storages.get(t.untyped_storage().data_ptr(), 0) > 1
        if t.device.type != "cpu":
            t = t.cpu()
        elif shared or not t.is_contiguous():
            t = t.clone()  # a view into a shared buffer (e.g. cuDNN's flat LSTM weights)
        out[name] = t.contiguous()
    return out, aliases


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes; shared tensors are stored once (aliases in the metadata)."""
    from safetensors.torch import save

    out, aliases = _export(tensors)
    meta = {"format": "pt", **(metadata or {})}
    if aliases:
        meta["layerwise.aliases"] = json.dumps(aliases)
    return save(out, metadata=meta)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, aliases filled in; LoadError naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"{path}: corrupt or not a safetensors file ({msg})") from None
    try:
        aliases = json.loads(meta.get("layerwise.aliases", "{}"))
    except json.JSONDecodeError:
        raise LoadError(f"{path}: corrupt alias table in the safetensors metadata") from None
    for alias, canonical in aliases.items():
        if canonical not in tensors:
            raise LoadError(f"{path}: alias {alias!r} points to missing tensor {canonical!r}")
        tensors[alias] = tensors[canonical]
    return tensors, meta


def _refuse_pickle(path: Path) -> None:
    raise LoadError(
        f"{path}: refusing to load a pickle file (unpickling can run arbitrary code); "
        "convert it to safetensors, or pass allow_pickle=True to read it with torch.load(weights_only=True)"
    )


def load_state_dict_file(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file (or, with ``allow_pickle``, a torch pickle read
    with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            _refuse_pickle(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types here
            raise LoadError(f"{path}: could not load with weights_only=True ({type(e).__name__})") from None
    return read_safetensors(path)[0]


def save_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """The model's state dict as one safetensors file, written atomically."""
    from layerwise.io import atomic_write_bytes

    return atomic_write_bytes(Path(path), tensors_to_bytes(unwrap(model).state_dict()))


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True, allow_pickle: bool = False) -> nn.Module:
    """Load a weights file into ``model`` (shapes and names must match when ``strict``)."""
    sd = load_state_dict_file(path, allow_pickle=allow_pickle)
    _load_into(unwrap(model), sd, Path(path), strict)
    return model


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], path: Path, strict: bool = True,
               names: set[str] | None = None) -> None:
    """Load ``sd`` into ``model``: every key when ``strict``; exactly ``names`` (a subset of
    the model's keys, e.g. only what a fine-tuning strategy trains) when given."""
    own = model.state_dict()
    if names is not None:
        missing = sorted(names - set(sd))
        unexpected = sorted(set(sd) - names) + sorted(set(sd) & names - set(own))
        if missing or unexpected:
            raise LoadError(f"{path}: the saved tensors are not the ones this model saves (missing "
                            f"{', '.join(missing[:4]) or 'none'}; unexpected {', '.join(unexpected[:4]) or 'none'})")
        strict = False
    elif strict:
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
            raise LoadError(f"{path}: weights do not match the model ({'; '.join(parts)})")
    for k, v in sd.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise LoadError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=strict)


def state_subset(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """The entries ``names`` of ``model``'s state dict (what a partial checkpoint holds)."""
    sd = unwrap(model).state_dict()
    missing = sorted(set(names) - set(sd))
    if missing:
        raise CheckpointError(f"cannot save {', '.join(missing[:4])}: not in the model's state dict")
    return {n: sd[n] for n in names}


# ---------------------------------------------------------------- optimizer and RNG state


def _split_optimizer(sd: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        js = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}/{idx}/{k}"] = v
            else:
                js[k] = v
        state_json[str(idx)] = js
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], js: dict, prefix: str) -> dict:
    # torch's own state dicts key parameters by index; FSDP's full state dicts by name
    def key(i: str) -> int | str:
        return int(i) if i.isdigit() else i

    state: dict = {key(i): dict(v) for i, v in js["state"].items()}
    for name, t in tensors.items():
        if name.startswith(prefix + "/"):
            idx, field = name[len(prefix) + 1 :].rsplit("/", 1)
            state.setdefault(key(idx), {})[field] = t
    groups = []
    for g in js["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG the loop may touch: torch CPU (and CUDA), Python's random, NumPy's global."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    js: dict[str, Any] = {"python": _jsonable(random.getstate())}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        tensors["rng/numpy"] = torch.from_numpy(keys.astype("int64"))
        js["numpy"] = [name, int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    return tensors, js


def restore_rng(tensors: dict[str, torch.Tensor], js: dict) -> None:
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    if "python" in js:
        v = js["python"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in js and "rng/numpy" in tensors:
        import numpy as np

        name, pos, has_gauss, cached = js["numpy"]
        np.random.set_state((name, tensors["rng/numpy"].numpy().astype("uint32"), pos, has_gauss, cached))


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    return x


# ---------------------------------------------------------------- checkpoint directories


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (the unit a full disk interrupts)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checkpoint_dir(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) as directory ``path``, atomically.

    The files go into a temporary sibling directory, each fsynced, which is then renamed
    to ``path`` (an existing ``path`` is moved aside first and removed after). On any
    error the temporary directory is removed and a :class:`CheckpointError` names the
    failure; whatever was at ``path`` before is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # what mkdir would give; mkdtemp makes 0700
        for name, data in files.items():
            _write_file(tmp / name, data)
        _fsync_dir(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
            old = None
        reason = e.strerror or str(e)
        raise CheckpointError(
            f"could not write checkpoint {path}: {reason} (errno {e.errno}); earlier checkpoints are intact"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    models: dict[str, nn.Module | dict[str, torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer | dict] | None = None,
    state: dict[str, Any] | None = None,
    rng: bool = True,
) -> Path:
    """Write a checkpoint directory atomically (see the module docstring).

    models: name -> module (or a ready state dict, e.g. gathered from FSDP).
    optimizers: name -> optimizer (or its state dict).
    state: JSON-serialisable loop state (step, configs, schedule, metrics ...).
    """
    files: dict[str, bytes] = {}
    for name, m in models.items():
        sd = m if isinstance(m, dict) else unwrap(m).state_dict()
        files[f"{name}.safetensors"] = tensors_to_bytes(sd)
    tensors: dict[str, torch.Tensor] = {}
    opt_json: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        sd = opt if isinstance(opt, dict) else opt.state_dict()
        t, js = _split_optimizer(sd, f"optimizer/{name}")
        tensors.update(t)
        opt_json[name] = js
    rng_json: dict[str, Any] = {}
    if rng:
        t, rng_json = capture_rng()
        tensors.update(t)
    files["state.safetensors"] = tensors_to_bytes(tensors)
    doc = {
        "format": "layerwise-checkpoint",
        "version": FORMAT_VERSION,
        "models": sorted(models),
        **(state or {}),
        "optimizers": opt_json,
        "rng": rng_json,
        "sha256": {name: _sha256(data) for name, data in files.items()},
    }
    try:
        files["state.json"] = (json.dumps(doc, indent=1, allow_nan=True) + "\n").encode("utf-8")
    except TypeError as e:
        raise CheckpointError(f"checkpoint state is not JSON-serialisable: {e}") from None
    return write_checkpoint_dir(path, files)


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: ``state`` is state.json; ``tensors`` the optimizer/RNG tensors."""

    path: Path
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    def optimizer_state_dict(self, name: str = "optimizer") -> dict:
        """The optimizer's state dict as torch's ``state_dict()`` gave it."""
        js = self.state.get("optimizers", {}).get(name)
        if js is None:
            raise LoadError(f"{self.path / 'state.json'}: no optimizer state named {name!r}")
        return _join_optimizer(self.tensors, js, f"optimizer/{name}")

    def load_optimizer(self, optimizer: torch.optim.Optimizer, name: str = "optimizer") -> None:
        sd = self.optimizer_state_dict(name)
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"{self.path / 'state.safetensors'}: optimizer state does not fit ({msg})") from None

    def restore_rng(self) -> None:
        restore_rng(self.tensors, self.state.get("rng", {}))


def read_state_json(path: Path) -> dict[str, Any]:
    f = path / "state.json"
    if not f.is_file():
        pickles = sorted(p.name for p in path.glob("*") if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
        if pickles:
            _refuse_pickle(path / pickles[0])
        raise LoadError(f"{f}: no such file (not a layerwise checkpoint directory)")
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{f}: corrupt checkpoint state ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != "layerwise-checkpoint":
        raise LoadError(f"{f}: not a layerwise checkpoint (missing format tag)")
    return doc


def load_checkpoint(
    path: str | os.PathLike,
    models: dict[str, nn.Module] | None = None,
    verify: bool = True,
    strict: bool = True,
    names: dict[str, set[str]] | None = None,
) -> Checkpoint:
    """Read a checkpoint directory and load its weights into ``models`` (name -> module).

    ``verify`` checks every file against the sha256 recorded when it was written, so a
    truncated or corrupted file is a one-line LoadError naming it. ``names``: for a model
    saved partially (only the tensors a strategy trains), the keys its file must hold.
    """
    path = Path(path)
    doc = read_state_json(path)
    hashes = doc.get("sha256", {})

    def read(name: str) -> dict[str, torch.Tensor]:
        f = path / name
        if not f.is_file():
            raise LoadError(f"{f}: missing from the checkpoint")
        if verify and name in hashes and _sha256(f.read_bytes()) != hashes[name]:
            raise LoadError(f"{f}: corrupt (its sha256 differs from the one recorded when it was saved)")
        return read_safetensors(f)[0]

    for name, model in (models or {}).items():
        if name not in doc.get("models", []):
            raise LoadError(f"{path}: checkpoint has no model named {name!r} (has {', '.join(doc.get('models', []))})")
        _load_into(unwrap(model), read(f"{name}.safetensors"), path / f"{name}.safetensors", strict,
                   (names or {}).get(name))
    tensors = read("state.safetensors") if (path / "state.safetensors").exists() else {}
    return Checkpoint(path, doc, tensors)


class CheckpointManager:
    """The ``checkpoints/`` folder of a run: ``step-NNNNNNNN`` directories, the last
    ``keep_last`` kept plus the best one (recorded in ``best.json``)."""

    def __init__(self, root: str | os.PathLike, keep_last: int = 2) -> None:
        self.root = Path(root)
        self.keep_last = keep_last

    def step_dir(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / "state.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.step_dir(steps[-1]) if steps else None

    def verify(self, step: int) -> str | None:
        """Why checkpoint ``step`` cannot be resumed from (unreadable state, a missing file,
        a sha256 that differs from the recorded one), or None when it verifies."""
        path = self.step_dir(step)
        try:
            doc = read_state_json(path)
        except LoadError as e:
            return str(e)
        for name, digest in (doc.get("sha256") or {}).items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if _sha256(f.read_bytes()) != digest:
                return f"{name} is corrupt (sha256 differs from the one recorded when it was saved)"
        return None

    def latest_valid(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """(the newest checkpoint that verifies or None, [(newer checkpoint, why it does not)])."""
        skipped: list[tuple[Path, str]] = []
        for step in reversed(self.steps()):
            reason = self.verify(step)
            if reason is None:
                return self.step_dir(step), skipped
            skipped.append((self.step_dir(step), reason))
        return None, skipped

    def best_info(self) -> dict | None:
        f = self.root / "best.json"
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LoadError(f"{f}: corrupt (not JSON)") from None

    def best(self) -> Path | None:
        info = self.best_info()
        if info is None:
            return None
        p = self.step_dir(int(info["step"]))
        return p if p.is_dir() else None

    def save(self, step: int, **kwargs: Any) -> Path:
        """save_checkpoint(step_dir(step), **kwargs), then remove old ones."""
        path = save_checkpoint(self.step_dir(step), **kwargs)
        self.prune()
        return path

    def mark_best(self, step: int, metric: str, value: float) -> None:
        atomic_write_text(self.root / "best.json", json.dumps({"step": step, "metric": metric, "value": value}) + "\n")
        self.prune()

    def prune(self) -> None:
        steps = self.steps()
        info = self.best_info()
        keep = set(steps[-self.keep_last :])
        if info is not None:
            keep.add(int(info["step"]))
        for s in steps:
            if s not in keep:
                shutil.rmtree(self.step_dir(s), ignore_errors=True)

    def discard_after(self, step: int) -> None:
        """Remove checkpoints later than ``step`` (a resumed run rewrites them)."""
        for s in self.steps():
            if s > step:
                shutil.rmtree(self.step_dir(s), ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint directory from a run directory (its best, else latest checkpoint), a
    ``checkpoints/`` folder, or a checkpoint directory itself."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path}: no such checkpoint or run directory")
    if (path / "state.json").is_file():
        return path
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        raise LoadError(f"{path}: expected a run or checkpoint directory, got a file")
    for root in (path / "checkpoints", path):
        mgr = CheckpointManager(root)
        if mgr.steps():
            found = (mgr.best() if prefer == "best" else None) or mgr.latest()
            if found is not None:
                return found
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(pickles[0])
    raise LoadError(f"{path}: no checkpoint found (expected step-N directories with state.json)")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", prefer: str = "best") -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model recorded in a checkpoint (its config) and load its weights."""
    from layerwise.models.registry import build, get_config

    ckpt_dir = resolve_checkpoint(path, prefer)
    doc = read_state_json(ckpt_dir)
    cfg_data = doc.get("model_config")
    if not isinstance(cfg_data, dict):
        raise LoadError(f"{ckpt_dir / 'state.json'}: no model_config recorded; cannot rebuild the model")
    model = build(get_config(cfg_data), device="cpu")
    ckpt = load_checkpoint(ckpt_dir, {"model": model})
    return model.to(device), ckpt
