"""The consistency flags in a real headless Chromium (as tests/test_browser_review.py drives it): the
Review tab on a case built to disagree with its classifier (tests/consistency_fixtures.py) outlines the
two sentences that disagree, lists the three flagged findings beside their scores and, in guarded mode,
marks them below the unchanged draft. Skipped without Chromium as the other browser tests are."""

from __future__ import annotations

import pytest

from consistency_fixtures import ASSERTED, DENIED, OMITTED, make_disagreeing_run
from test_browser_review import ARTIFACTS, chromium_page, free_port, require_chromium

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):  # noqa: F811
    require_chromium()
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from ui.app import AppConfig, build_app, launch
    from ui.cases import CaseBrowser

    root = tmp_path_factory.mktemp("consistency-app")
    data = write_dataset(SynthConfig(n=2, seed=0, scale=8.0), root / "data", progress=False)
    config = AppConfig(data_dir=data, runs={}, upload_dir=root / "uploads", viewer="png")  # waits on its planes
    first = CaseBrowser(config).case_names()[0]  # the case the page opens on
    config.runs["built"] = make_disagreeing_run(root / "built", tiny_tokenizer, CaseBrowser(config).volume(first))
    app = build_app(config)
    port = free_port()
    launch(app, config, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", first
    app.close()


def test_review_flags_the_sentences_that_disagree_with_the_classifier(served):
    url, first = served
    with chromium_page(1500, 1100) as page:
        page.goto(url)
        page.wait_for_selector("#plane-axial img")
        page.wait_for_function("n => document.querySelector('#case-info').innerText.includes(n)", arg=first)
        page.locator("#max-tokens input[type=number]").fill("32")
        page.locator("#max-tokens input[type=number]").press("Enter")
        page.locator("#guarded input[type=checkbox]").check()
        page.locator("#generate").click()
        page.wait_for_function("() => (document.querySelector('#consistency') || {innerText: ''}).innerText"
                               ".includes('flagged')")
        assert "3 finding(s) flagged" in page.locator("#consistency").inner_text()
        outlined = page.locator("#generated-report .consistency-flag")
        assert outlined.count() == 2
        assert [outlined.nth(i).get_attribute("data-finding") for i in range(2)] == [ASSERTED, DENIED]
        assert "Hiatal hernia is noted." in outlined.nth(0).inner_text()
        assert "confidently low" in outlined.nth(0).get_attribute("title")
        assert "No lymphadenopathy in the mediastinum" in outlined.nth(1).inner_text()
        marks = page.locator("#generated-report .guard-mark")
        assert marks.count() == 3 and OMITTED in page.locator("#generated-report .guard-marks").inner_text()
        page.locator("#consistency summary").click()
        flagged_rows = page.locator("#consistency tr.flagged")
        assert flagged_rows.count() == 3 and "omits" in flagged_rows.filter(has_text=OMITTED).inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "consistency.png"), full_page=True)
