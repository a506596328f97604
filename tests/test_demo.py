"""`layerwise demo --quick` end to end, and its report in a real browser."""

import json
import re

import pytest

import browser
from layerwise.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_demo_writes_every_step(demo_dir, capsys):
    page = (demo_dir / "report.html").read_text()
    titles = re.findall(r"<section id='[^']*'><h2>(.*?)</h2>", page)
    assert len(titles) == 6
    assert titles[3].startswith("Pretraining from scratch")
    assert titles[4].startswith("Fine-tuning, strategy by strategy")
    assert titles[5].startswith("A plan")
    assert not re.search(r"(src|href)=['\"](?!data:|#)", page)  # self-contained
    assert "124,439,808" in page and "8,030,261,248" in page  # GPT-2 small, Llama-3-8B
    assert "4,194,304" in page  # LoRA r=8 on q, v of Llama-2-7B
    data = json.loads((demo_dir / "report.json").read_text())
    finetune = next(d["data"] for d in data if d["title"].startswith("Fine-tuning"))
    assert [r["strategy"] for r in finetune["results"]] == ["head", "top-2"]
    assert finetune["results"][0]["trainable"] == 770
    assert (demo_dir / "pretrain" / "sample.txt").read_text().startswith("ROMEO:")


@pytest.mark.skipif(not browser.available(), reason="Debian chromium and chromium-driver are installed by `make test`")
def test_demo_report_renders_in_headless_chromium(demo_dir, tmp_path):
    r = browser.inspect_page(demo_dir / "report.html", tmp_path / "demo.png")
    assert len(r["sections"]) == 6 and all(s["height"] > 100 for s in r["sections"])
    assert len(r["images"]) == 7  # 3 comparisons, loss curve, 2 fine-tuning plots, plan
    for img in r["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown_w"] > 100, img
    assert r["console"] == []
