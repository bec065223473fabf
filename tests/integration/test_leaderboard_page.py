"""The HTML leaderboard in a real headless browser: every entry rendered, sorting by a click, heatmaps, a screenshot.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; `.ci/run` installs both and sets
MCIT_BENCH_REQUIRE_BROWSER=1 so that a missing browser fails CI instead of skipping the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mcit_bench.board.leaderboard import entry_from_results
from mcit_bench.board.report import html_page
from mcit_bench.board.stats import aggregate
from mcit_bench.results.document import parse_results
from tests.unit.test_leaderboard import results_doc

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium keeps trying to reach Google's hosts, which this network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    required = os.environ.get("MCIT_BENCH_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (CI installs it)")
    if not Path(CHROMIUM).exists():
        if required:
            raise FileNotFoundError(f"{CHROMIUM} is missing; install Debian's chromium package")
        pytest.skip("chromium is not installed (CI installs it)")
    return sync_playwright


def leaderboard_rows(methods: dict[str, list[list[float]]] | None = None, edit=lambda doc: doc):
    """Rows of two seeds per method, built from results documents (``edit`` may change each first)."""
    methods = methods or {"seqft": [[0, 10, 0], [80, 10, 10], [30, 70, 10], [20, 30, 60]],
                          "replay": [[0, 10, 0], [80, 10, 10], [60, 70, 10], [50, 55, 60]],
                          "branchlora": [[0, 10, 0], [85, 10, 10], [70, 75, 10], [65, 60, 62]]}
    entries = []
    for method, matrix in methods.items():
        for seed in (0, 1):
            jitter = [[min(100.0, value + seed) for value in row] for row in matrix]
            doc = edit(results_doc(matrix=jitter, method=method, seed=seed))
            entries.append(entry_from_results(parse_results(doc, f"{method}-{seed}")))
    return aggregate(entries)


def test_leaderboard_page_renders_sorts_and_shows_heatmaps(tmp_path):
    sync_playwright = _browser_or_skip()
    rows = leaderboard_rows()
    page_path = tmp_path / "leaderboard.html"
    page_path.write_text(html_page(rows))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else route.abort())  # the page must need nothing from the network
        page.goto(page_path.as_uri())
        methods = page.locator("#board tbody tr.entry td:first-child").all_inner_texts()
        assert sorted(methods) == ["branchlora", "replay", "seqft"]
        assert methods == ["branchlora", "replay", "seqft"]  # default: ACC, best first
        page.locator("#board thead th", has_text="Forgetting").click()
        assert page.locator("#board tbody tr.entry td:first-child").all_inner_texts() == ["seqft", "replay",
                                                                                           "branchlora"]
        page.locator("#board thead th", has_text="Forgetting").click()
        assert page.locator("#board tbody tr.entry td:first-child").all_inner_texts() == ["branchlora", "replay",
                                                                                           "seqft"]
        page.locator("#board thead th", has_text="ACC").click()
        assert page.locator("svg.heatmap").count() == 1
        assert page.locator("svg.heatmap rect").count() == 4 * 3
        page.locator("#board tbody tr.entry", has_text="seqft").click()
        assert page.locator("svg.heatmap").count() == 2 and page.locator("svg.curve").count() == 2
        shot = tmp_path / "leaderboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("MCIT_BENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "leaderboard.png")


def test_a_row_scored_on_validation_is_labelled_so(tmp_path):
    sync_playwright = _browser_or_skip()

    def on_validation(doc: dict) -> dict:
        if doc["run"]["method"] == "replay":
            doc["run"]["config"] = {"validation": {"fraction": 0.1, "max_per_task": 100, "seed": 0}}
        return doc

    page_path = tmp_path / "leaderboard.html"
    page_path.write_text(html_page(leaderboard_rows(edit=on_validation)))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.goto(page_path.as_uri())
        protocols = dict(zip(page.locator("#board tbody tr.entry td:first-child").all_inner_texts(),
                             page.locator("#board tbody tr.entry td:nth-child(2)").all_inner_texts()))
        browser.close()
    assert "validation split" in protocols["replay"]
    assert "validation" not in protocols["seqft"] and "validation" not in protocols["branchlora"]


HOSTILE = {"<!--<script>": [[0, 10, 0], [80, 10, 10], [30, 70, 10], [20, 30, 60]],
           "</script><script>alert(1)</script>": [[0, 10, 0], [80, 10, 10], [60, 70, 10], [50, 55, 60]],
           "<img src=x onerror=alert(2)>": [[0, 10, 0], [85, 10, 10], [70, 75, 10], [65, 60, 62]]}


def hostile(doc: dict) -> dict:
    """Names a forged or hand-edited board could hold: markup in the model and in every task name."""
    tasks = ["<img src=x onerror=alert(3)>", "<svg onload=alert(4)>", "'\"><b>x</b>"]
    doc["run"]["model"] = "<img src=x onerror=alert(5)>"
    doc["run"]["sequence"]["tasks"] = doc["tasks"] = tasks
    doc["task_info"] = {task: info for task, info in zip(tasks, doc["task_info"].values())}
    doc["stages"] = [{**stage, "tasks": [task]} for stage, task in zip(doc["stages"], tasks)]
    doc["stages"][-1]["task_selection"] = {task: 50.0 for task in tasks}  # the selection list shows them too
    return doc


def test_hostile_names_render_as_text_and_run_no_script(tmp_path):
    sync_playwright = _browser_or_skip()
    rows = leaderboard_rows(HOSTILE, hostile)
    page_path = tmp_path / "hostile.html"
    page_path.write_text(html_page(rows))
    dialogs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else route.abort())
        page.goto(page_path.as_uri())
        methods = page.locator("#board tbody tr.entry td:first-child").all_inner_texts()
        assert sorted(methods) == sorted(HOSTILE)  # every row, its name shown as text
        assert page.locator("svg.heatmap").count() == 1  # the best row opens by itself
        for method in methods[1:]:  # open the others: task names go into SVG text and titles
            page.locator("#board tbody tr.entry", has_text=method).click()
        assert page.locator("svg.heatmap").count() == 3
        assert page.locator("svg.heatmap text", has_text="<svg onload=alert(4)>").count() == 3 * 2
        selection = page.locator("tr.detail p").all_inner_texts()  # the task-selection lists, as text
        assert len(selection) == 3 and all("<svg onload=alert(4)> 50.0%" in text for text in selection)
        page.wait_for_timeout(200)
        browser.close()
    assert dialogs == []


def test_the_shipped_board_fits_1500_pixels_and_tags_show_their_settings(tmp_path):
    """The whole shipped board at 1500 px: the page never scrolls sideways (the table scrolls in its own
    box), and a tuned settings tag shows the values behind its digest on hover."""
    from mcit_bench.board.leaderboard import read_leaderboard

    sync_playwright = _browser_or_skip()
    board = read_leaderboard(Path(__file__).resolve().parents[2] / "leaderboard" / "leaderboard.json")
    rows = aggregate(board.entries)
    tuned = next(row for row in rows if row.key.method == "dmole" and row.key.settings.startswith("tuned-"))
    page_path = tmp_path / "leaderboard.html"
    page_path.write_text(html_page(rows))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else route.abort())
        page.goto(page_path.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 1500
        box = page.locator("div.scroll")
        assert box.evaluate("b => b.scrollWidth >= b.clientWidth")
        titles = page.locator("span.tag.tuned", has_text=tuned.key.settings).evaluate_all(
            "tags => tags.map(t => t.title)")
        browser.close()
    assert titles and set(titles) == {"rank = 4, training.lr = 0.00364"}
    assert tuned.settings_values == {"rank": 4, "training.lr": 0.0036396393567863887}
