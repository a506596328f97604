"""Run a study's units into its run directory, resumably, in one or several processes.

Each finished unit is written at once to ``units/<key>.json`` (atomically), so that
``--resume`` skips the units already there and an interrupted sweep loses at most the
units that were running (with ``--jobs N`` the running units finish and are kept).
``jobs == 1`` trains in this process with ``threads`` torch
threads (default 1, see :data:`DEFAULT_THREADS`); ``jobs > 1`` starts that many worker processes (spawned: a forked OpenMP runtime
can hang) with ``threads`` threads each and hands them units as they free up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.io import atomic_write_text

UNITS = "units"


class StudyInterrupted(LayerwiseError):
    """Ctrl-C during a sweep: the finished units are kept; ``--resume`` continues."""

    run_status = "interrupted"


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads per process unless --threads says otherwise. One: on the shared 2-core machine a
# study ran 24.6x faster with one torch thread than with two (OpenMP threads spin while they
# wait for each other, and the other thread's core is busy with someone else's work), and
# one process beat one per core (benchmarks/bench_study_jobs.py, docs/depth.md).
DEFAULT_THREADS = 1


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """``threads`` if given, else :data:`DEFAULT_THREADS` (never more than the cores shared
    out among ``jobs`` processes)."""
    return threads if threads is not None else max(1, min(DEFAULT_THREADS, cores() // jobs))


def load_done(run_dir: Path) -> dict[str, dict]:
    """The records of the units already finished in ``run_dir``, by key."""
    out: dict[str, dict] = {}
    folder = Path(run_dir) / UNITS
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # torn by a crash mid-write (writes are atomic, so only a foreign file): run it again
        if isinstance(rec, dict) and "key" in rec:
            out[rec["key"]] = rec
    return out


def _file(run_dir: Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
    return Path(run_dir) / UNITS / f"{safe}.json"


def save(run_dir: Path, record: dict) -> None:
    path = _file(run_dir, record["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, allow_nan=False) + "\n")


def check_spec(run, spec: dict) -> None:
    """A resumed study must be the same study: refuse other flags, naming them."""
    old = run.manifest.get("spec")
    if old is None:
        run.update(spec=spec)
        return
    if old != json.loads(json.dumps(spec)):
        diff = sorted(k for k in set(old) | set(spec) if old.get(k) != json.loads(json.dumps(spec.get(k))))
        raise ConfigError(
            f"--resume: {run.path} holds this study with other settings ({', '.join(diff)}); resume with the same "
            "flags, or start it again with --overwrite")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if hasattr(os, "setpgrp"):
        # Out of the terminal's process group: Ctrl-C reaches the main process only, which
        # lets the running units finish (and keeps them) and starts no new ones.
        os.setpgrp()


def run_units(run_dir: Path, units: list[dict], execute: Callable[[dict], dict], jobs: int = 1, threads: int | None = None,
              on_done: Callable[[dict, dict, int, int], None] | None = None) -> dict[str, dict]:
    """Run every unit of ``units`` not yet in ``run_dir``; return all records by key.

    execute: a module-level function (worker processes import it by name) that trains one
    unit; ``unit["train"]["num_threads"]`` is set to the threads of its process.
    on_done(unit, record, finished, total): after each unit (a progress bar).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
    done = load_done(run_dir)
    n_threads = threads_per_job(jobs, threads)
    todo = [dict(u, train={**u["train"], "num_threads": n_threads}) for u in units if u["key"] not in done]
    finished = len(units) - len(todo)
    total = len(units)

    def finish(unit: dict, record: dict) -> None:
        nonlocal finished
        save(run_dir, record)
        done[record["key"]] = record
        finished += 1
        if on_done is not None:
            on_done(unit, record, finished, total)

    try:
        if jobs == 1 or len(todo) <= 1:
            for unit in todo:
                finish(unit, execute(unit))
        else:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker, initargs=(n_threads,)) as pool:
                pending = {pool.submit(execute, u): u for u in todo}
                try:
                    while pending:
                        ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in ready:
                            finish(pending.pop(fut), fut.result())
                except KeyboardInterrupt:
                    for fut in pending:
                        fut.cancel()  # those not started yet
                    for fut, unit in pending.items():  # the running ones finish and are kept
                        if not fut.cancelled():
                            finish(unit, fut.result())
                    raise
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    except KeyboardInterrupt:
        raise StudyInterrupted(f"interrupted after {finished} of {total} runs; the finished runs are kept in "
                               f"{Path(run_dir) / UNITS}") from None
    except LayerwiseError as e:
        if getattr(e, "run_status", None) == "interrupted":
            raise StudyInterrupted(f"interrupted after {finished} of {total} runs; the finished runs are kept in "
                                   f"{Path(run_dir) / UNITS}") from None
        raise
    missing = [u["key"] for u in units if u["key"] not in done]
    if missing:
        raise LoadError(f"{run_dir}: {len(missing)} runs did not finish ({missing[0]} …)")
    return {u["key"]: done[u["key"]] for u in units}


def run_study(out_dir: str | Path, command: str, spec: dict, todo: list[dict], execute: Callable[[dict], dict],
              finish: Callable[[dict[str, dict], int], tuple[dict, str, list]], *, what: str, quick: bool = False,
              resume: bool = False, overwrite: bool = False, jobs: int = 1, threads: int | None = None,
              argv: list[str] | None = None, on_done: Callable | None = None,
              emit: Callable[[str], None] = lambda line: None) -> dict:
    """The frame every study shares: open the run directory ``out_dir`` for ``command`` (its
    manifest; ``--resume`` only with the same ``spec``), run the units ``todo`` through
    ``execute`` (:func:`run_units`), then ``finish(records, threads per job)`` → (results
    document, report title, report sections), written as ``results.json``,
    ``report-sections.json`` and ``report.html``. ``what`` names the sweep in the first line
    emitted ("12 points × 3 seeds"). Returns the results document."""
    from layerwise.report.html import report_for_run_dir, write_manifest
    from layerwise.rundir import open_run

    out_dir = Path(out_dir)
    with open_run(out_dir, command, resume=resume, overwrite=overwrite, argv=argv, info={"quick": quick}) as run:
        check_spec(run, spec)
        for note in run.notes:
            emit(f"note: {note}")
        n_threads = threads_per_job(jobs, threads)
        emit(f"{what} = {len(todo)} runs; {jobs} process(es) × {n_threads} thread(s)")
        records = run_units(out_dir, todo, execute, jobs=jobs, threads=threads, on_done=on_done)
        doc, title, sections = finish(records, n_threads)
        atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
        write_manifest(out_dir, title, sections)
        report_for_run_dir(out_dir)
    return doc
