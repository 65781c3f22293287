"""The demo as a newcomer meets it, in a real headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright: the app's first start on the embedded demo (its held-out test phantoms written then),
two demo runs named so that V-2 sorts first. The page must open on V-3 (the method) and on a
held-out test case labelled as such, show the reference section the run was trained on (the
Impression) before and after Generate and in Compare, and open the Research tab on V-3 vs V-2 side
by side, its table inside the page. Skipped without Chromium as tests/test_browser_review.py is."""

from __future__ import annotations

import pytest

from test_browser_review import ARTIFACTS, chromium_page, free_port, require_chromium

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_start(tmp_path_factory, tiny_gpt2_dir):  # noqa: F811
    require_chromium()
    import cli
    from run_fixtures import write_tiny_run
    from test_app_research import _evaluation
    from test_metrics_cli import BAD, GOOD
    from training.demo import first_start as demo_start
    from ui.app import build_app, launch
    from ui.commands.app import app_config
    from ui.demo import Demo

    root = tmp_path_factory.mktemp("newcomer")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAD3D_HOME", str(root / "home"))
    mp.setattr(demo_start, "PREVIEW_CASES", 2)
    runs = {v: write_tiny_run(root / v, tiny_gpt2_dir, variant=v, report_section="impression")[0] for v in ("v2", "v3")}
    evaluation = root / "eval"
    _evaluation(root, evaluation / "v2", "v2", BAD)
    _evaluation(root, evaluation / "v3", "v3", GOOD)
    assert cli.main(["compare", str(evaluation / "v2"), str(evaluation / "v3"), "--out", str(evaluation),
                     "--resamples", "200"]) == 0
    demo = Demo(data=demo_start.ensure_demo_data, runs=lambda: dict(sorted(runs.items())), variants=("v3", "v2"),
                build=lambda say: runs, evaluation=lambda: evaluation)
    args = cli.build_parser().parse_args(["app", "--upload-dir", str(root / "uploads")])
    config = app_config(args, demo)
    assert list(config.runs) == ["v2", "v3"] and config.eval_dir == evaluation  # V-2 sorts first here
    app = build_app(config)
    port = free_port()
    launch(app, config, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", app, config
    app.close()
    mp.undo()


@pytest.fixture()
def page(first_start):
    with chromium_page(1280, 900) as page:
        yield page


def test_first_start_opens_on_v3_a_test_case_and_the_run_section(first_start, page):
    url, app, config = first_start
    browser = app.rad3d_browser
    first = browser.case_names()[0]
    case = browser.dataset.case(first)
    assert case.split == "test" and first.startswith("test_")
    page.goto(url)
    page.wait_for_function("n => document.querySelector('#case-info')?.innerText?.includes(n)", arg=first)
    assert page.locator("#case-select input").input_value() == f"{first} · held-out test"
    assert page.locator("#run-select input").input_value() == "v3"

    def reference_shows_the_impression():
        page.wait_for_function("() => document.querySelector('#reference-report')?.innerText?.includes('Impression')")
        text = " ".join(page.locator("#reference-report").inner_text().split())
        assert " ".join(case.impression.split()) in text and case.impression.strip()
        assert " ".join(case.findings.split()) not in text

    reference_shows_the_impression()  # before Generate
    page.locator("#max-tokens input[type=number]").fill("8")
    page.locator("#max-tokens input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#timing')?.innerText?.includes('Time to report')")
    assert "run v3, variant v3" in page.locator("#timing").inner_text()
    reference_shows_the_impression()  # after Generate

    page.locator("button[role=tab]:has-text('Compare runs')").first.click()
    labels = page.locator("#compare-runs label").all_inner_texts()
    assert [t.strip() for t in labels] == ["v3", "v2"]
    page.locator("#compare").click()
    page.wait_for_function("() => document.querySelector('#compare-status')?.innerText?.includes('2 runs compared')")
    reference = " ".join(page.locator("#compare-reference").inner_text().split())
    assert "Impression" in reference and " ".join(case.impression.split()) in reference

    page.locator("button[role=tab]:has-text('Research')").first.click()
    page.wait_for_selector("#research-comparison table")
    head = page.locator("#research-comparison thead").inner_text()
    assert "V-3" in head and "V-2" in head and "V-3 − V-2" in head
    status = page.locator("#research-status").inner_text()
    assert "95%" in status and "40 cases" in status
    overflow = page.evaluate("""() => [...document.querySelectorAll('#research-comparison *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible').length""")
    assert overflow == 0  # the table fits the page: nothing scrolls sideways
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "first-start-research.png"), full_page=True)
