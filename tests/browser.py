"""Load an HTML file in real headless Chromium (Debian's package) and report what rendered."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

CHECK = """
const imgs = Array.from(document.images);
const cellColor = (sel) => { const td = document.querySelector(sel); return td ? getComputedStyle(td).color : null; };
return {
  sections: Array.from(document.querySelectorAll('section')).map(s => ({
      id: s.id, title: s.querySelector('h2').textContent, height: s.getBoundingClientRect().height,
      headings: s.querySelectorAll('h1, h2').length, width: s.clientWidth})),
  images: imgs.map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                          shown_w: i.getBoundingClientRect().width})),
  tables: Array.from(document.querySelectorAll('section table')).map(t => {
      const box = t.parentElement, section = t.closest('section');
      return {section: section.id, header: Array.from(t.querySelectorAll('th')).map(h => h.textContent.trim()),
              cells: Array.from(t.querySelectorAll('td')).map(c => c.textContent.trim()),
              table_w: t.scrollWidth, box_w: box.clientWidth, box_overflow: getComputedStyle(box).overflowX,
              box_right: box.getBoundingClientRect().right, section_right: section.getBoundingClientRect().right};
  }),
  rows: {frozen: document.querySelectorAll('tr.frozen').length, trainable: document.querySelectorAll('tr.trainable').length,
         frozen_color: cellColor('tr.frozen td'), trainable_color: cellColor('tr.trainable td')},
  text: document.body.innerText,
  title: document.title,
};
"""


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def inspect_page(html_file: Path, screenshot: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    user_data = tempfile.mkdtemp(prefix="lw-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={user_data}",
                 "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(Path(html_file).resolve().as_uri())
        result = driver.execute_script(CHECK)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 50, 16000))
        driver.save_screenshot(str(screenshot))
        result["console"] = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        return result
    finally:
        driver.quit()
        shutil.rmtree(user_data, ignore_errors=True)
