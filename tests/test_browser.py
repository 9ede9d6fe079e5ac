"""report.html for a reader (issue 23): it opens with the study's answer (the summary table, then the verdicts), shows
no notebook plumbing or temporary path, and no image is broken; in headless Chromium on a tiny real pipeline run, and
parsed on a hand-made results tree where Chromium is absent."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_pipeline import smoke_tree
from test_report import L2, RU, RW, fake_run

from avaga_lib.orchestration import pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def _driver(profile_dir: Path):  # noqa: ANN202 - selenium type only when installed
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (dev extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"chromium / chromedriver not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install -y chromium chromium-driver")
    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile_dir}")  # fresh profile: no state from other runs
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.mark.slow
def test_report_html_renders_in_chromium(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    driver = _driver(tmp_path / "chrome-profile")  # first: without Chromium the test skips before any training
    try:
        tree = smoke_tree(tmp_path_factory)
        html = Path(tree["results"]) / "report.html"
        assert html.exists(), f"{html} not written: {tree['report_outcomes']}"
        driver.set_page_load_timeout(60)
        driver.get(html.resolve().as_uri())
        # the first heading and the first table are the answer: the summary of every run, then the verdicts
        first_heading = driver.find_element("css selector", "h1, h2, h3")
        assert "answer" in first_heading.text, first_heading.text
        first_table = driver.find_element("css selector", "table")
        assert first_table.get_attribute("id") == "headline-table"
        rows = first_table.find_elements("css selector", "tbody tr")
        runs = [r.find_element("css selector", "td").text for r in rows]
        assert "AVAGA-R_u" in runs and "AVAGA-R_w" in runs
        header = first_table.find_element("css selector", "thead").text
        assert "image AUROC" in header and "mean accuracy" in header
        verdicts = driver.find_elements("xpath", "//h2[starts-with(normalize-space(.), 'Verdicts per claim')]")
        assert verdicts, "the verdicts are missing from report.html"
        body = driver.find_element("css selector", "body").text
        assert "results_dir" not in body and str(tree["base"]) not in body  # no plumbing, no temporary path
        images = driver.find_elements("css selector", "img")
        assert len(images) >= 2  # grouped bars, qualitative grid
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src.slice(0, 80));"
        )
        assert broken == [], f"broken images: {broken}"
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    finally:
        driver.quit()


class _Outline(HTMLParser):
    """The headings and tables of an HTML page in document order: (tag, id, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[list[str]] = []
        self._open: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3", "table"):
            self.items.append([tag, dict(attrs).get("id") or "", ""])
            self._open = self.items[-1]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3", "table"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[2] += data


@pytest.mark.slow
def test_report_html_opens_with_the_answer(tmp_path: Path) -> None:
    """Without Chromium: notebook 07 over hand-made runs, its report.html parsed (about a minute: one kernel)."""
    base = tmp_path / "results"
    for seed in (0, 1, 2):
        fake_run(base, "mvtec", "bottle", {**RU, "train.seed": seed}, {"iou": 0.3 + 0.02 * seed, "mean_accuracy": 0.7})
        fake_run(base, "mvtec", "bottle", {**RW, "train.seed": seed}, {"iou": 0.4, "mean_accuracy": 0.5})
        fake_run(base, "mvtec", "bottle", {**L2, "train.seed": seed}, {"iou": 0.1, "mean_accuracy": 0.6})
    outcomes = pipeline.run_report_notebooks(base, notebooks=["07_report.ipynb"], log=lambda _: None,
                                             extra_parameters={"train_if_missing": False})
    assert outcomes["07_report.ipynb"].status == "ok", outcomes["07_report.ipynb"].error
    html = (base / "report.html").read_text()
    outline = _Outline()
    outline.feed(html)
    headings = [text for tag, _, text in outline.items if tag != "table"]
    tables = [item for item in outline.items if item[0] == "table"]
    assert "the study's answer" in headings[0]
    assert tables[0][1] == "headline-table" and "AVAGA-R_w" in tables[0][2] and "mean accuracy" in tables[0][2]
    order = [h.rstrip("¶") for h in headings]
    assert order.index("Verdicts per claim") < order.index("Paper-shaped tables and figures") < order.index(
        "Table 2 (mvtec): IoU per category")
    assert "AVAGA-R_w predicts one class" in html  # the verdicts are REPORT.md's, the one-class rule included
    assert "results_dir" not in html and "out_dir" not in html and str(tmp_path) not in html
