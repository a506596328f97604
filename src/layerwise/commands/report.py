"""`layerwise report RUN_DIR`: one self-contained HTML page for any run directory."""

from __future__ import annotations


def run(args) -> int:
    from layerwise.report.html import report_for_run_dir

    if args.output is not None:
        from layerwise.io import check_output_file

        check_output_file(args.output, (".html", ".htm"), "--output")
    path = report_for_run_dir(args.run_dir, args.output)
    print(f"report written to {path}")
    return 0


def register(sub) -> None:
    r = sub.add_parser("report", help="build a self-contained HTML report for a run directory")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by layerwise")
    r.add_argument("--output", "-o", default=None, metavar="FILE.html",
                   help="where to write the HTML (default: RUN_DIR/report.html)")
    r.set_defaults(func=run)
