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


# --- fine-tuning and compare reports (small, fast runs) ----------------------------------------

SIG_FLOAT = __import__("re").compile(r"^-?\d+\.\d+(e[-+]\d+)?%?$")


def significant_digits(text: str) -> int:
    mantissa = text.rstrip("%").split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return len(mantissa)


@pytest.fixture(scope="module")
def tuned_runs(tmp_path_factory):
    """A gpt-nano pretrained for 2 steps, LoRA-fine-tuned (a run directory) and compared across
    three strategies on 40 labelled texts."""
    import os

    root = tmp_path_factory.mktemp("tuned")
    os.environ.setdefault("LAYERWISE_CACHE", str(root / "cache"))
    corpus = root / "corpus.txt"
    corpus.write_text("call now to claim a free prize, or see you at lunch tomorrow.\n" * 30)
    data = root / "texts.csv"
    data.write_text("text,label\n" + "".join(
        f"{'free prize call now' if i % 2 else 'see you at lunch'} {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    lm = root / "lm"
    assert main(["pretrain", "--model", "gpt-nano", "--data", str(corpus), "--steps", "2", "--batch-size", "2",
                 "--set", "block_size=16", "--eval-steps", "1", "--out-dir", str(lm), "--no-progress"]) == 0
    common = ["--model", str(lm), "--data", str(data), "--max-len", "16", "--batch-size", "8", "--no-progress"]
    ft = root / "finetune"
    assert main(["finetune", "--strategy", "lora:4", "--targets", "c_attn", "--steps", "4", "--out-dir", str(ft), *common]) == 0
    cmp = root / "compare"
    assert main(["compare", "--strategies", "head,lora:4,full", "--steps", "3", "--out-dir", str(cmp), *common]) == 0
    return {"finetune": ft, "compare": cmp}


@pytest.mark.slow
def test_finetune_report_shows_results_and_layers_as_fine_tuned(tuned_runs):
    page = report_for_run_dir(tuned_runs["finetune"])
    text = page.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    assert titles[:2] == ["Fine-tuning lm on texts.csv: lora:4", "Layers as fine-tuned"]
    assert "<th>metric</th><th>validation</th><th>test</th>" in text.replace("\n", "").replace(" style=\"text-align:right\"", "")
    assert "_SuffixClassifier" not in text and "SuffixClassifier" not in text
    frozen = re.findall(r"<tr class='frozen'><td>(?:&nbsp;)*(\w+)</td>", text)
    trained = re.findall(r"<tr class='(?:trainable|partial)'><td>(?:&nbsp;)*(\w+)</td>", text)
    assert "wte" in frozen and "score" in trained  # embedding frozen, the new head trains (PEFT's modules_to_save)
    assert "the new head trains too (score: 96 parameters)" in text


@pytest.mark.slow
@pytest.mark.skipif(not browser.available(), reason="Debian chromium and chromium-driver are installed by `make test`")
@pytest.mark.parametrize("which", ["finetune", "compare"])
def test_tuning_reports_in_headless_chromium(tuned_runs, which, tmp_path):
    """The fine-tuning and compare reports as a person sees them (a screenshot of each): one
    heading per section, every table inside its card (or scrolling in its box), measured values
    with at most 4 significant digits, frozen layers greyed, no private class names, no
    profiler chatter; the trainable-by-kind chart and the test results shown."""
    import os
    import shutil

    page = report_for_run_dir(tuned_runs[which])
    shot = tmp_path / f"{which}-report.png"
    r = browser.inspect_page(page, shot)
    if os.environ.get("LAYERWISE_SCREENSHOT_DIR"):
        shutil.copy(shot, os.environ["LAYERWISE_SCREENSHOT_DIR"])
    assert shot.stat().st_size > 20_000 and r["console"] == []
    assert r["sections"] and all(s["headings"] == 1 for s in r["sections"]), r["sections"]
    for t in r["tables"]:
        fits = t["table_w"] <= t["box_w"] or t["box_overflow"] in ("auto", "scroll")
        assert fits and t["box_right"] <= t["section_right"] + 1, t["header"]
        for cell in t["cells"]:
            if SIG_FLOAT.match(cell):
                assert significant_digits(cell) <= 4, (t["header"], cell)
    assert not re.search(r"(?<![\w.])_[A-Z]\w+", r["text"]), "a private class name reached the page"
    assert "USDT:" not in r["text"]
    for img in r["images"]:
        assert img["complete"] and img["w"] > 100 and img["shown_w"] > 100, img
    if which == "finetune":
        assert any(t["header"] == ["metric", "validation", "test"] for t in r["tables"])
        assert r["rows"]["frozen"] > 0 and r["rows"]["trainable"] > 0
        assert r["rows"]["frozen_color"] != r["rows"]["trainable_color"]  # frozen rows greyed
    else:
        assert {"trainable by kind", "f1 vs trainable"} <= {i["alt"] for i in r["images"]}
        strategies = next(t for t in r["tables"] if t["header"][:2] == ["strategy", "trainable"])
        assert [c for c in strategies["cells"] if c in ("head", "lora:4", "full")] == ["head", "lora:4", "full"]
