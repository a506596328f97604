"""Run directories: one directory, one run.

A run directory holds the files of exactly one run, named by its manifest ``run.json``::

    {"format": "layerwise-run", "version": 1, "run_id": "3f9c…", "command": "pretrain",
     "argv": [...], "created": "...", "status": "running|finished|failed|interrupted",
     "model": {...}, "base": {...}, "strategy": "lora:8", "tokenizer": {...}, "data": {...}}

:func:`open_run` is the one way a job or the trainer starts writing into a directory:

- a new or empty directory: the run is created (``run.json`` first, before anything else);
- a directory that holds a run: refused, naming ``--resume`` and ``--overwrite``, unless
  ``resume`` (the same command continues it) or ``overwrite``;
- ``overwrite``: the old run is moved aside in one rename (``.NAME.replaced-ID`` next to
  it) and a fresh directory takes its place, so a reader never sees the two mixed; the
  old run is deleted once the new one has written its first checkpoint (or finished);
- a directory that is not empty and holds no layerwise run (a user's files) is never
  written into nor removed;
- a path that is an existing file is refused.

Checkpoints record the ``run_id`` of the run that wrote them, so a resumed run never
continues another run's checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerwise.errors import ConfigError
from layerwise.io import atomic_write_text

MANIFEST = "run.json"
FORMAT = "layerwise-run"
VERSION = 1
# Files that mark a directory written by layerwise before run.json existed.
_LEGACY_MARKERS = ("config.json", "checkpoints", "metrics.jsonl", "report-sections.json", "finetune.json", "compare.json")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of run directory ``path``, or None when it has none.

    A manifest that cannot be read is a :class:`ConfigError` naming the file."""
    f = Path(path) / MANIFEST
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{f}: corrupt run manifest ({type(e).__name__}); expected the JSON that layerwise writes") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{f}: not a layerwise run manifest (missing format tag {FORMAT!r})")
    return doc


def _describe(doc: dict, path: Path) -> str:
    """'a pretrain run (3f9c1a2b, 20 steps, finished)'."""
    parts = [doc.get("run_id", "?")[:8]]
    steps = _checkpoint_steps(path)
    if steps:
        parts.append(f"checkpoints up to step {steps[-1]}")
    if doc.get("status"):
        parts.append(str(doc["status"]))
    return f"a {doc.get('command', 'layerwise')} run ({', '.join(parts)})"


def _checkpoint_steps(path: Path) -> list[int]:
    root = path / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        name = p.name
        if name.startswith("step-") and name[5:].isdigit() and (p / "state.json").is_file():
            out.append(int(name[5:]))
    return sorted(out)


def _is_legacy_run(path: Path) -> bool:
    return any((path / m).exists() for m in _LEGACY_MARKERS)


@dataclass
class RunDir:
    """An opened run directory (see the module docstring)."""

    path: Path
    manifest: dict
    resumed: bool = False
    replaced: Path | None = None  # the previous run, moved aside until this one has a checkpoint
    notes: list[str] = field(default_factory=list)  # what the user should be told (resume, overwrite)
    writable: bool = True  # False on non-main processes: they never write the manifest

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", ""))

    @property
    def command(self) -> str:
        return str(self.manifest.get("command", ""))

    def update(self, **fields: Any) -> None:
        """Record ``fields`` (model config, base, strategy, tokenizer, data …) in the manifest."""
        self.manifest.update({k: v for k, v in fields.items()})
        self._write()

    def set_status(self, status: str) -> None:
        self.manifest["status"] = status
        self.manifest["updated"] = _now()
        self._write()

    def finish(self) -> None:
        """The run completed: status ``finished``, and a replaced run is deleted."""
        self.set_status("finished")
        self.release_replaced()

    def release_replaced(self) -> None:
        """Delete the previous run that ``overwrite`` moved aside (once this run has a
        checkpoint or has finished, so that the directory is never left with neither)."""
        if self.replaced is not None and self.writable:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finish the run, or record how it ended: ``interrupted`` (Ctrl-C, or an error whose
        ``run_status`` says so) or ``failed``."""
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.set_status("interrupted")
        else:
            self.set_status(getattr(exc, "run_status", "failed"))

    def _write(self) -> None:
        if self.writable:
            atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=2, default=str) + "\n")


def check_run(
    path: str | os.PathLike,
    command: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compatible: tuple[str, ...] = (),
) -> str:
    """What :func:`open_run` would do with ``path``, without writing anything: "new",
    "resume", "fresh" (resume asked, nothing there) or "replace"; or the ConfigError it
    would raise. Jobs call it before their slow work, and ``open_run`` just before writing."""
    path = Path(path)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the run, --overwrite replaces it")
    if not _is_main_process():
        return "resume" if resume else "new"  # rank 0 decides (see open_run)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out-dir {path}: is an existing file; expected a directory (a new one, or a run directory)")
    if not (path.is_dir() and any(path.iterdir())):
        return "fresh" if resume else "new"
    doc = read_manifest(path)
    if doc is None and not _is_legacy_run(path):
        raise ConfigError(
            f"--out-dir {path}: is not empty and holds no layerwise run; choose a new or empty directory "
            "(nothing was written there)"
        )
    what = _describe(doc, path) if doc else "a layerwise run from before run manifests (no run.json)"
    if resume:
        if doc is not None and "*" not in compatible and doc.get("command") not in (command, *compatible):
            raise ConfigError(
                f"--resume: {path} holds {what}, not a {command} run; choose another --out-dir for this {command} run"
            )
        return "resume"
    if not overwrite:
        raise ConfigError(
            f"--out-dir {path}: already holds {what}; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out-dir"
        )
    return "replace"


def open_run(
    path: str | os.PathLike,
    command: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    argv: list[str] | None = None,
    info: dict | None = None,
    compatible: tuple[str, ...] = (),
) -> RunDir:
    """Claim ``path`` for a run of ``command`` (see the module docstring).

    resume: continue the run in ``path`` (it must be a run of ``command`` or of one of
        ``compatible``, ``("*",)`` for any); a missing or empty directory starts fresh,
        with a note saying so.
    overwrite: replace the run in ``path`` (moved aside atomically, deleted later).
    info: fields recorded in the manifest from the start.
    Raises :class:`ConfigError` naming ``--resume``/``--overwrite`` when ``path`` holds
    another run, and for a file or a foreign non-empty directory (see :func:`check_run`).
    """
    path = Path(path)
    if not _is_main_process():
        # Rank 0 claims the directory (and refuses a used one); the other processes of a
        # torchrun job never read or write the manifest.
        return RunDir(path, {"command": command}, resumed=resume, writable=False)
    action = check_run(path, command, resume=resume, overwrite=overwrite, compatible=compatible)
    notes: list[str] = []
    replaced: Path | None = None
    if action == "resume":
        manifest = read_manifest(path) or _new_manifest(command, argv, info)
        manifest.setdefault("resumes", []).append(_now())
        manifest["status"] = "running"
        manifest.update(info or {})
        rd = RunDir(path, manifest, resumed=True, notes=notes)
        rd._write()
        return rd
    if action == "replace":
        doc = read_manifest(path)
        what = _describe(doc, path) if doc else "a layerwise run from before run manifests"
        old_id = (doc or {}).get("run_id", "legacy")[:8]
        replaced = path.parent / f".{path.name}.replaced-{old_id}-{uuid.uuid4().hex[:6]}"
        os.replace(path, replaced)
        notes.append(f"--overwrite: the previous run in {path} ({what}) was moved aside to {replaced}; "
                     "it is deleted once this run writes its first checkpoint")
    elif action == "fresh":
        notes.append(f"nothing to resume in {path}; starting fresh")
    path.mkdir(parents=True, exist_ok=True)
    rd = RunDir(path, _new_manifest(command, argv, info), replaced=replaced, notes=notes)
    rd._write()
    return rd


def _new_manifest(command: str, argv: list[str] | None, info: dict | None) -> dict:
    from layerwise import __version__

    doc = {
        "format": FORMAT,
        "version": VERSION,
        "run_id": uuid.uuid4().hex,
        "command": command,
        "argv": list(argv) if argv is not None else list(sys.argv),
        "layerwise": __version__,
        "created": _now(),
        "status": "running",
    }
    doc.update(info or {})
    return doc
