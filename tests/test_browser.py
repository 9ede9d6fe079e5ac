"""report.html of a tiny real pipeline run, opened in headless Chromium: headline table present, no broken image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_pipeline import smoke_tree

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
    tree = smoke_tree(tmp_path_factory)
    html = Path(tree["results"]) / "report.html"
    assert html.exists(), f"{html} not written: {tree['report_outcomes']}"
    driver = _driver(tmp_path / "chrome-profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get(html.resolve().as_uri())
        headline = driver.find_elements("css selector", "table#headline-table")
        assert headline, "headline table (id=headline-table) missing from report.html"
        rows = headline[0].find_elements("css selector", "tbody tr")
        assert len(rows) >= 2  # at least one category and the mean row
        assert "mean" in rows[-1].text
        header = headline[0].find_element("css selector", "thead").text
        assert "AVAGA-R_u" in header and "AVAGA-R_w" in header
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
