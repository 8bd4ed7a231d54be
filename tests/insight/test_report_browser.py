"""The report in a real browser: headless Chromium (the Debian package) via playwright.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is missing;
never downloads a browser.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import gatelab
from gatelab.insight.report import report_data, write_report

CHROMIUM = os.environ.get("GATELAB_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAYLOAD = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
CLOSE = "</script><script>window.__pwned=3</script>"

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is absent")
if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GATELAB_CHROMIUM)",
        allow_module_level=True,
    )

T, H = 6, 5
LABELS = ["the", PAYLOAD, "cat", IMG, CLOSE, "&amp;"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.manual_seed(0)
    lstm = gatelab.LSTM(3, H, num_layers=2)
    x = torch.randn(T, 3)
    data = report_data(
        lstm,
        x,
        labels=LABELS,
        title=f"title {PAYLOAD} {IMG}",
        subtitle=CLOSE,
        marks=[1, 3],
        results=[{"model": IMG, "solved": 0.5}],
        notes=[PAYLOAD],
        gradient_flow={"models": [{"name": IMG, "hidden": [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]}]},
    )
    with torch.no_grad():
        _, _, trace = lstm(x, return_trace=True)
    path = write_report(data, tmp_path_factory.mktemp("report") / "report.html")
    return path, trace


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, report):
    path, _ = report
    page = browser.new_page()
    messages = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=15000)
    yield page
    errors = [m for m in messages if m.startswith(("error", "pageerror"))]
    page.close()
    assert errors == []


def test_loads_offline_and_renders_every_section(page):
    assert page.evaluate("location.protocol") == "file:"
    assert page.locator("#saturation svg circle.sat-dot").count() == 3 * H
    assert page.locator("#flow svg").count() == 2
    assert page.locator("#gradient svg polyline").count() == 1
    assert page.locator("#gradient-section").is_visible()
    assert "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t" in page.inner_text("#equations")


def test_heatmap_has_one_cell_per_token_for_the_chosen_gate_and_layer(page, report):
    _, trace = report
    page.select_option("#sel-layer", "1")
    page.select_option("#sel-gate", label="forget gate f_t")
    rows = page.locator("#heatmap-table tbody tr")
    assert rows.count() == H  # one row per unit
    for u in range(H):
        cells = rows.nth(u).locator("td.hm")
        assert cells.count() == T  # one cell per token
        assert {cells.nth(t).get_attribute("data-series") for t in range(T)} == {"forget_gate"}
    cell = rows.nth(2).locator("td.hm").nth(4)
    assert float(cell.get_attribute("data-value")) == pytest.approx(
        float(trace.forget_gate[1, 4, 2]), abs=1e-3
    )
    heads = page.locator("#heatmap-table thead th.tok")
    assert heads.count() == T
    assert [heads.nth(t).text_content() for t in range(T)] == LABELS
    page.select_option("#sel-rows", "gates")
    assert rows.count() == 6  # i, f, g, o, c, h of one unit
    assert all(rows.nth(k).locator("td.hm").count() == T for k in range(6))


def test_hover_shows_the_value(page, report):
    _, trace = report
    page.select_option("#sel-layer", "0")
    page.select_option("#sel-gate", label="input gate i_t")
    cell = page.locator("#heatmap-table tbody tr").nth(3).locator("td.hm").nth(2)
    cell.hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    value = float(trace.input_gate[0, 2, 3])
    assert f"{value:.4f}" in tip.text_content()
    assert "unit 3" in tip.text_content() and "cat" in tip.text_content()
    assert f"{value:.4f}" in cell.get_attribute("title")


def test_user_text_shows_as_text_and_runs_nothing(page):
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert PAYLOAD in page.inner_text("h1") and IMG in page.inner_text("h1")
    assert CLOSE in page.inner_text("p.sub")
    assert IMG in page.inner_text("#results")
    assert PAYLOAD in page.inner_text("ul.notes")
    assert page.locator("script").count() == 2
    page.hover("#heatmap-table thead th.tok >> nth=3")
    assert page.evaluate("typeof window.__pwned") == "undefined"
