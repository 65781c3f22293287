"""The reader-study screen in a real browser (Chromium via Playwright): a reader logs in, is
refused a submission without scores, scores two items, reloads the page, logs in again and
resumes on the third."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
from pathlib import Path

import pytest

import cli
from reader_study_fixtures import write_phantom_dataset, write_predictions

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing on CI: install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium package to run browser tests)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.timeout(120)
def test_reader_scores_two_items_reloads_and_resumes_on_the_third(tmp_path, browser):
    from playwright.sync_api import expect

    from study.readers.service import ReaderStudyService
    from ui.reader_study import ReaderStudyAppConfig, build_reader_study_app

    data = write_phantom_dataset(tmp_path / "data", n=3)
    preds = write_predictions(data, tmp_path / "preds")
    db_path = tmp_path / "study.sqlite"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["study", "create", "--db", str(db_path), "--name", "pilot", "--arms",
                         *[f"{a}={p}" for a, p in preds.items()], "--data", str(data), "--cases", "1",
                         "--readers", "ann"]) == 0
    password = re.search(r"reader ann\s+password (\S+)", out.getvalue()).group(1)

    app = build_reader_study_app(ReaderStudyAppConfig(db_path=db_path, study="pilot"))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page()
        page.set_default_timeout(20_000)
        url = f"http://127.0.0.1:{port}/"

        def log_in():
            page.goto(url)
            page.locator("#reader-name input, #reader-name textarea").first.fill("ann")
            page.locator("#reader-password input").fill(password)
            page.locator("#login-button").click()

        def score(clinical: str, technical: str):
            page.locator("#clinical-score").get_by_label(clinical).check()
            page.locator("#technical-score").get_by_label(technical).check()
            page.locator("#clinical-criteria").get_by_label("No hallucinated").check()
            page.locator("#submit-button").click()

        log_in()
        expect(page.locator("#progress")).to_contain_text("Item 1 of 3")
        expect(page.locator("#report")).to_contain_text("Report R-")
        expect(page.locator("#case-image img")).to_be_visible()  # the case's CT, rendered by ui.viewer
        expect(page.locator("#clinical-score")).to_contain_text("1 — Very poor")
        expect(page.locator("#clinical-score")).to_contain_text("5 — Excellent")
        for arm in ("baseline", "v2", "v3"):
            expect(page.locator("body")).not_to_contain_text(f"run-{arm}")
        page.locator("#submit-button").click()  # no scores yet
        expect(page.locator("#message")).to_contain_text("required")
        expect(page.locator("#progress")).to_contain_text("Item 1 of 3")

        score("4 — Good", "3 — Acceptable")
        expect(page.locator("#progress")).to_contain_text("Item 2 of 3")
        score("2 — Poor", "5 — Excellent")
        expect(page.locator("#progress")).to_contain_text("Item 3 of 3")

        page.reload()
        expect(page.locator("#login-button")).to_be_visible()
        log_in()
        expect(page.locator("#progress")).to_contain_text("Item 3 of 3")
        expect(page.locator("#progress")).to_contain_text("2 of 3 rated")
        page.close()
    finally:
        app.close()

    ratings = ReaderStudyService(db_path).ratings_frame("pilot")
    assert sorted(zip(ratings["clinical"], ratings["technical"])) == [(2, 5), (4, 3)]
    assert ratings["criteria"].str.contains("no_hallucination").all()
