"""`layerwise report RUN_DIR`: one self-contained HTML page for any run directory."""

from __future__ import annotations


def run(args) -> int:
    from layerwise.report.html import report_for_run_dir

    path = report_for_run_dir(args.run_dir, args.output)
    print(f"report written to {path}")
    return 0


def register(sub) -> None:
    r = sub.add_parser("report", help="build a self-contained HTML report for a run directory")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--output", "-o", default=None, help="where to write the HTML (default RUN_DIR/report.html)")
    r.set_defaults(func=run)
