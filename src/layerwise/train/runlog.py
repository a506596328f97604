"""The metrics of a run: ``metrics.jsonl`` (one JSON record per line, appended as they
come), ``metrics.csv`` (the scalar columns, rewritten atomically), an optional
TensorBoard log, and ``loss-curve.png`` at the end.

Records carry ``split`` ("train", "val", "test") and ``step``. A resumed run first drops
the records written after the checkpoint it resumes from, so the log of an interrupted
and resumed run reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from layerwise.errors import ConfigError
from layerwise.io import atomic_write_text


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl (a torn last line, from a crash mid-write, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunLog:
    """Metrics of one run, in memory and (with ``run_dir``) on disk."""

    def __init__(self, run_dir: str | os.PathLike | None, resume_step: int | None = None, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.records: list[dict] = []
        self._file = None
        self._tb = None
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            self.records = [r for r in read_records(path) if r.get("split") in ("train", "val") and r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif path.exists():
            path.unlink()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - appended to for the whole run, closed by close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("TrainConfig.tensorboard: the tensorboard package is not installed (pip install tensorboard)") from None
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=resume_step)

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, allow_nan=True) + "\n")
            self._file.flush()
        if self._tb is not None:
            split, step = record.get("split", "train"), record.get("step", 0)
            for k, v in record.items():
                if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def series(self, split: str, key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in self.records if r.get("split") == split and isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]

    def write_csv(self) -> Path | None:
        """metrics.csv: one row per record, the union of scalar columns (blank where absent)."""
        if self.run_dir is None:
            return None
        cols: list[str] = []
        for r in self.records:
            for k, v in r.items():
                if k not in cols and _scalar(v):
                    cols.append(k)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.records:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        return atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def plot(self, title: str = "") -> Path | None:
        """loss-curve.png: training loss (per logged step) and validation loss against step."""
        if self.run_dir is None:
            return None
        ts, tl = self.series("train", "loss")
        vs, vl = self.series("val", "loss")
        if not tl and not vl:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2))
        if tl:
            ax.plot(ts, tl, label="train loss", color="#2b7bba", lw=1.2)
        if vl:
            ax.plot(vs, vl, "o-", label="validation loss", color="#d9534f", lw=1.5, ms=4)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        finite = [v for v in tl + vl if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path = self.run_dir / "loss-curve.png"
        tmp = self.run_dir / ".loss-curve.png.tmp"
        fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
