"""Data-parallel training with PyTorch's own engine: ``torchrun`` + DDP, or FSDP.

Launch any training script or the CLI with ``torchrun --nproc_per_node N ...``; torchrun
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``, and
:func:`init_distributed` joins the process group (gloo on CPU, NCCL on CUDA).

Every process draws the same *global* micro-batch (batches are a pure function of the
seed and the batch index) and keeps its own rows (:func:`shard`): with an equal share
per process, DDP's gradient average equals the 1-process gradient of the whole batch,
so the losses match a 1-process run with the same global batch (up to float summation
order). ``parallel="fsdp"`` shards parameters, gradients and optimizer state with
FSDP2's ``fully_shard``, one unit per repeated block (``layerwise.roles.mark_block``),
for models whose training state does not fit on one device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from layerwise.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this process group was created by init_distributed

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group described by torchrun's environment, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    owns = False
    if not dist.is_initialized():
        _bind_world_defaults()
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        owns = True
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
        owns_group=owns,
    )


# Modules that bind ``dist.group.WORLD`` as a default argument value when they are imported.
# Imported after ``init_process_group`` they hold the live default group for the rest of the
# interpreter, so ``destroy_process_group`` cannot free it: gloo's worker and TCP-loop threads
# then outlive the training and are still running while the interpreter shuts down, where
# they can abort the process ("terminate called without an active exception"). DDP's constructor
# imports ``torch._dynamo``, which imports ``torch.distributed.nn.functional``, so every
# DDP run hit this. Imported before the group exists, the defaults are ``None`` (the
# default group at call time). Under FSDP the sharded model itself (its DTensors' DeviceMesh)
# still holds the group for as long as the model object lives.
_WORLD_DEFAULT_MODULES = (
    "torch.distributed.nn.functional",
    "torch.distributed.optim.zero_redundancy_optimizer",
    "torch.distributed.fsdp.sharded_grad_scaler",
    "torch._dynamo",  # imported by DistributedDataParallel.__init__; pulls in the first
)


def _bind_world_defaults() -> None:
    import importlib

    for name in _WORLD_DEFAULT_MODULES:
        importlib.import_module(name)


def close(info: DistInfo, failed: bool = False) -> None:
    """Leave the process group this module created, so that its threads are joined here and
    not while the interpreter exits. After a normal run every process first waits for the
    others (gloo aborts a process whose peers tear the group down under it); after a failure
    (``failed``) it does not, since a peer may be inside another collective and would never
    reach the barrier."""
    if info.owns_group and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def check_parallel(parallel: str) -> None:
    """Refuse ``parallel="fsdp"`` outside a torchrun launch of several processes: FSDP's point
    is to shard parameters, gradients and optimizer state across processes, and one process
    would silently train unsharded (the memory the user planned for would not be saved)."""
    if parallel == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise ConfigError(
            "--parallel fsdp: shards the model across the processes of a torchrun launch, and this run is one "
            "process (WORLD_SIZE is not set); launch it with torchrun --nproc_per_node N, or drop --parallel"
        )


def check_divisible(batch_size: int, info: DistInfo) -> None:
    if batch_size % info.world_size:
        raise ConfigError(
            f"TrainConfig.batch_size: expected a multiple of the {info.world_size} processes "
            f"(the global batch is split evenly), got {batch_size}"
        )


def shard(batch: tuple[torch.Tensor, ...], info: DistInfo) -> tuple[torch.Tensor, ...]:
    """This process's rows of a global batch (contiguous, as even as possible)."""
    if not info.enabled:
        return batch
    return tuple(t.tensor_split(info.world_size)[info.rank] for t in batch)


def all_reduce_sum_(tensors: list[torch.Tensor], info: DistInfo, device: torch.device) -> None:
    """Sum each tensor over all processes, in place."""
    if not info.enabled:
        return
    for t in tensors:
        buf = t.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        t.copy_(buf.to(t.device))


def mean_over_processes(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    v = value.detach().clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module, info: DistInfo, strategy: str, device: torch.device) -> nn.Module:
    """DDP or FSDP around ``model`` (already on ``device``); the model itself when alone."""
    if not info.enabled:
        return model
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from layerwise.roles import is_declared_block

        for m in model.modules():
            if is_declared_block(m) and m is not model:
                fully_shard(m)
        fully_shard(model)
        return model
    raise ConfigError(f"TrainConfig.parallel: expected 'ddp' or 'fsdp', got {strategy!r}")


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Unsharded model (and optimizer) state dicts of an FSDP model, on the CPU of rank 0
    (collective: every process must call it)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return msd, osd


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, msd: dict, osd: dict | None) -> None:
    """Load unsharded state dicts into an FSDP model and its optimizer (collective)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, msd, options=opts)
    if optimizer is not None and osd is not None:
        set_optimizer_state_dict(model, optimizer, osd, options=opts)
