"""The HTML report: self-contained, and checked in a real browser."""

import json
import re

import pytest

from layerwise.analysis import analyze
from layerwise.cli import main
from layerwise.errors import LoadError
from layerwise.models import build
from layerwise.report.html import Section, render_html, report_for_run_dir
from layerwise.report.runs import write_summary_dir

import browser


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("summary-run")
    write_summary_dir([analyze(build(p, device="meta"), name=p) for p in ("resnet18", "mobilenet-v1")], out)
    return out


def test_report_is_self_contained(summary_run):
    page = report_for_run_dir(summary_run)
    text = page.read_text()
    assert text.count("<section") == 3
    # no external assets: every image is a data URI, nothing is fetched
    assert not re.search(r"(src|href)=['\"](?!data:|#)", text)
    assert "11,689,512" in text and "4,231,976" in text
    blobs = re.findall(r"<script type='application/json' id='data-\d+'>(.*?)</script>", text, re.S)
    assert len(blobs) == 3 and json.loads(blobs[1].replace("<\\/", "</"))["totals"]["params"] == 11_689_512


def test_report_command_and_errors(summary_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(summary_run), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="nothing to report"):
        report_for_run_dir(tmp_path / "empty")


def test_html_escapes_text():
    page = render_html("<t>", [Section("a <b>", markdown="x <script>alert(1)</script>", data={"k": "</script>"})])
    assert "<script>alert" not in page and "&lt;t&gt;" in page
    assert "</script>\"" not in page


def test_highlighted_tokens_are_escaped_and_survive_the_manifest(tmp_path):
    from layerwise.report.html import sections_for_run_dir, write_manifest

    hl = [{"label": "spam <b>", "tokens": [["Free", 2.0], [" <script>", -1.0], [" win", 0.5]]}]
    write_manifest(tmp_path, "t", [Section("Token importance", highlights=hl)])
    _, (sec,) = sections_for_run_dir(tmp_path)
    assert sec.highlights == hl
    page = render_html("t", [sec])
    assert page.count("<span style=") == 3 and "&lt;script&gt;" in page and "<script>" not in page.split("<body>")[1]
    assert "rgba(214,39,40,1.00)" in page  # the largest positive score in full red
    assert "rgba(31,119,180,0.50)" in page  # half the largest, negative: half-strength blue


@pytest.mark.slow
@pytest.mark.skipif(not browser.available(), reason="Debian chromium and chromium-driver are installed by `make test`")
def test_report_renders_in_headless_chromium(summary_run, tmp_path):
    page = report_for_run_dir(summary_run)
    shot = tmp_path / "shot.png"
    r = browser.inspect_page(page, shot)
    assert [s["title"] for s in r["sections"]] == ["Comparison", "resnet18: depth and parameters",
                                                   "mobilenet-v1: depth and parameters"]
    assert all(s["height"] > 100 for s in r["sections"])
    assert len(r["images"]) == 3
    for img in r["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown_w"] > 100, img
    assert r["console"] == []
    assert shot.stat().st_size > 20_000
