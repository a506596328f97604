"""Write docs/examples.md from the run directories of full example runs.

    layerwise example NAME --out-dir RUNS/NAME          # for every example (or RUNS/NAME.log
                                                         # holding /usr/bin/time's "TIME NAME wall W s
                                                         # user U s" and "LOAD start … end …" lines)
    python docs/make_examples_doc.py RUNS [--out docs/examples.md]

Every figure comes from the runs: the headline metrics and their targets from results.json,
the command from run.json, the time from results.json ("seconds": the example's own wall
time) and, when the log is there, the process' wall and CPU time and the machine's load.
Nothing is typed by hand; an example without a finished full run is listed as not run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _log_facts(log: Path) -> dict:
    if not log.is_file():
        return {}
    text = log.read_text(errors="replace")
    out = {}
    m = re.search(r"TIME \S+ wall ([\d.]+) s user ([\d.]+) s sys ([\d.]+) s", text)
    if m:
        out["wall"], out["user"], out["sys"] = (float(g) for g in m.groups())
    m = re.search(r"LOAD start ([\d.]+) \S+ \S+ end ([\d.]+)", text)
    if m:
        out["load"] = (float(m.group(1)), float(m.group(2)))
    return out


def _command(run: dict) -> str:
    argv = list(run.get("argv") or [])
    try:
        i = argv.index("example")
    except ValueError:
        return ""
    args = [a for a in argv[i:] if a not in ("--no-progress", "--overwrite")]
    j = args.index("--out-dir") if "--out-dir" in args else -1
    if j >= 0:
        del args[j:j + 2]
    return "layerwise " + " ".join(args)


def build(runs: Path) -> str:
    from layerwise.jobs.examples import examples

    head = ["# The articles' programs, full runs", "",
            "Each row is one `layerwise example NAME` run to completion on this project's 2-core CPU",
            "machine; the figures are read from each run directory's `results.json` and `run.json` by",
            "`docs/make_examples_doc.py` (regenerate with `python docs/make_examples_doc.py RUNS`).",
            "\"time\" is the example's own wall time; \"CPU\" is the process' user+system CPU seconds, which",
            "other processes on the machine do not inflate. `--quick` versions of all of them run in CI",
            "(tests/jobs/test_examples.py).", "",
            "| example | headline metrics (full run) | target | met | time | CPU | load |",
            "|---|---|---|---|---|---|---|"]
    details = ["", "## Every metric and the command of each run", ""]
    for ex in examples():
        name = ex.name
        d = runs / name
        res_path = d / "results.json"
        if not res_path.is_file():
            head.append(f"| `{name}` | (no full run recorded) | {'; '.join(str(t) for t in ex.targets)} | - | - | - | - |")
            continue
        res = json.loads(res_path.read_text())
        run = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
        metrics, targets = res.get("metrics") or {}, res.get("targets") or {}
        headline = ", ".join(f"{k} {_fmt(metrics[k])}" for k in targets if k in metrics)
        target = "; ".join(t["target"] for t in targets.values())
        met = "yes" if targets and all(t["met"] for t in targets.values()) else "**no**"
        facts = _log_facts(runs / f"{name}.log")
        cpu = f"{facts['user'] + facts['sys']:.0f} s" if "user" in facts else "-"
        load = f"{facts['load'][0]:.1f}–{facts['load'][1]:.1f}" if "load" in facts else "-"
        head.append(f"| `{name}` | {headline} | {target} | {met} | {res.get('seconds', 0):.0f} s | {cpu} | {load} |")
        details += [f"### {name}", "", "```console", f"$ {_command(run)}", "```", "",
                    "| metric | value |", "|---|---|"]
        details += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
        details.append("")
    return "\n".join(head + details).rstrip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, help="directory holding one run directory per example (RUNS/NAME)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "examples.md")
    args = p.parse_args()
    args.out.write_text(build(args.runs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
