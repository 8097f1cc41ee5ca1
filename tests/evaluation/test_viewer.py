"""The segmentation report's case viewer in headless Chromium: it opens on the slice with most labels,
draws the prediction in its label colour, scrolls, switches case; and the combined report across runs
has a summary row per model and links that resolve."""

import re
from pathlib import Path

from medmap.colours import label_colour
from medmap.evaluation.report import combine_reports
from tests.helpers import require


def test_viewer_scrolls_through_every_case(balls_run, tmp_path):
    from playwright.sync_api import sync_playwright

    run, _ = balls_run
    viewer = run / "viewer_val.html"
    assert viewer.is_file() and 'href="viewer_val.html"' in (run / "report.html").read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(viewer.as_uri())
            page.wait_for_function("document.body.dataset.drawn !== undefined")
            first = page.evaluate("document.body.dataset.drawn")
            colours = page.evaluate(
                """() => { const c = document.getElementById('view'), d = c.getContext('2d')
                .getImageData(0, 0, c.width, c.height).data, seen = new Set();
                for (let i = 0; i < d.length; i += 4) seen.add(`${d[i]},${d[i+1]},${d[i+2]}`); return [...seen]; }"""
            )
            ball = ",".join(map(str, label_colour("ball", 1)))
            assert ball in colours  # the truth outline, drawn in the label's colour
            assert any(c.split(",")[0] != c.split(",")[1] for c in colours if c != ball)  # a tinted prediction
            page.keyboard.press("ArrowDown")
            page.wait_for_function(f"document.body.dataset.drawn !== '{first}'")
            options = page.locator("#case option")
            if options.count() > 1:
                page.select_option("#case", index=1)
                case = first.split(":")[0]
                page.wait_for_function(f"document.body.dataset.drawn.split(':')[0] !== '{case}'")
            page.screenshot(path=str(tmp_path / "viewer.png"))
            assert (tmp_path / "viewer.png").stat().st_size > 5_000
        finally:
            browser.close()


def test_combined_report_has_a_summary_and_working_links(balls_run, tmp_path):
    run, _ = balls_run
    page = combine_reports([run / "report.html", run / "report.html"], tmp_path / "out" / "combined.html")
    text = page.read_text()
    assert text.count('<a href="#run-') == 2 and 'id="run-1"' in text and 'id="run-2"' in text
    assert "ball Dice" in text and "scored on val (optimistic)" in text
    for target in re.findall(r'href="([^"#][^"]*)"', text):
        assert (page.parent / target).resolve().is_file(), target  # the per-case CSV and the viewer
    assert any(Path(t).name == "viewer_val.html" for t in re.findall(r'href="([^"#][^"]*)"', text))
