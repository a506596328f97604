"""Device names, checked once: what ``--device`` accepts and whether it is usable here.

``check_device_name`` validates the spelling (a config may be written on one machine and
run on another); ``resolve_device`` also checks that the device exists in this torch
build, so ``--device cuda`` on a CPU-only build is one line naming the build, not a
traceback from deep inside torch.
"""

from __future__ import annotations

import re

from layerwise.errors import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
_NAME = re.compile(r"^(auto|cpu|mps|meta|cuda(:\d+)?)$")


def check_device_name(name: object, flag: str = "--device") -> str:
    """``name`` if it is a device layerwise runs on, else a ConfigError listing them."""
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise ConfigError(f"{flag}: unknown device {name!r}; expected {DEVICES}")
    return name.strip()


def resolve_device(name: str, flag: str = "--device", local_rank: int | None = None):
    """The torch.device for ``name`` on this machine ("auto": cuda if available, else cpu).

    ``local_rank`` picks the GPU of a torchrun process when ``name`` is a bare "cuda"."""
    import torch

    name = check_device_name(name, flag)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("CUDA is not available in this torch build" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise ConfigError(f"{flag} {name}: {why} (torch {torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{flag} {name}: there {'is' if count == 1 else 'are'} only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{flag} mps: the MPS backend is not available in this torch build (torch {torch.__version__})")
    return dev
