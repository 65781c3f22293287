"""The reader-study server end to end over its HTTP API (gradio_client): a study created from
phantom predictions, 20 simulated readers scoring at once, the server process killed (SIGKILL)
mid-study and started again, every reader resuming where they were, bad values refused with a
message, and the export holding exactly the ratings submitted. On PostgreSQL the restart brings up
two servers (two sites) on the one database, readers split between them, and a reader's same
answer sent through both sites at once is kept once."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import cli
from postgres_fixtures import postgres_server, study_db  # noqa: F401 (fixtures)
from reader_study_fixtures import write_phantom_dataset, write_predictions
from study.readers.service import ReaderStudyService

ROOT = Path(__file__).resolve().parents[1]
READERS = [f"r{i:02d}" for i in range(20)]
FIRST = 2  # items each reader scores before the server is killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rad3d study serve` in a subprocess."""

    def __init__(self, db_path: Path | str, name: str, data: Path, log: Path):
        self.args = [sys.executable, str(ROOT / "cli.py"), "study", "serve", "--db", str(db_path), "--name", name,
                     "--data", str(data), "--concurrency", "8"]
        self.log = log
        self.proc = None
        self.url = ""

    def start(self, timeout: float = 90.0) -> str:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*self.args, "--port", str(port)], cwd=ROOT, env=env,
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "config", timeout=2).read()
                return self.url
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server did not start in {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown handlers run
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def client(url):
    from gradio_client import Client

    # 20 clients start at once on a small shared machine: httpx's 5 s default read timeout is too tight.
    return Client(url, verbose=False, httpx_kwargs={"timeout": 120})


def revise_through_both_sites(urls: list[str], password: str, first: tuple[str, int, int]) -> tuple[str, int, int]:
    """r19 sends the same revision of its first answer through both sites at the same moment (a
    double click reaching two servers): it is stored once, as revision 2."""
    code, clinical, technical = first
    revised = (code, 1 + clinical % 5, technical)
    clients = [client(u) for u in urls]
    tokens = [c.predict("r19", password, api_name="/login")["token"] for c in clients]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda k: clients[k].predict(tokens[k], code, revised[1], revised[2], ["no_truncation"],
                                                   "r19 says ok", api_name="/submit_rating"), range(2)))
    return revised


@pytest.mark.slow
def test_concurrent_readers_survive_a_killed_server(tmp_path, study_db):
    from gradio_client.exceptions import AppError

    data = write_phantom_dataset(tmp_path / "data", n=4)
    preds = write_predictions(data, tmp_path / "preds")
    db_path = study_db
    two_sites = study_db.startswith("postgresql://")
    service = ReaderStudyService(db_path)
    passwords = {}
    import contextlib
    import io

    for name, readers in (("pilot", ",".join(READERS)), ("other", "zoe")):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(["study", "create", "--db", str(db_path), "--name", name, "--arms",
                             *[f"{a}={p}" for a, p in preds.items()], "--data", str(data), "--cases", "1",
                             "--readers", readers, "--revisable"]) == 0
        passwords[name] = dict(re.findall(r"reader (\S+)\s+password (\S+)", out.getvalue()))
    items = service.study_info("pilot")["items"]
    assert items == 3  # one case x three arms per reader keeps 20 readers x 2 server starts quick
    zoe = service.login("other", "zoe", passwords["other"]["zoe"])
    foreign_code = service.next_item(zoe).code

    server = Server(db_path, "pilot", data, tmp_path / "server.log")
    site_b = Server(db_path, "pilot", data, tmp_path / "site_b.log")
    submitted: dict[str, list[tuple[str, int, int]]] = {r: [] for r in READERS}

    def score(reader: str, url: str, how_many: int) -> int:
        """Log in, check where the queue resumes, score `how_many` items; return the resume position."""
        c = client(url)
        login = c.predict(reader, passwords["pilot"][reader], api_name="/login")
        view = login["item"]
        resumed = view["position"]
        for _ in range(how_many):
            clinical, technical = 1 + (len(submitted[reader]) + READERS.index(reader)) % 5, 1 + len(submitted[reader]) % 5
            nxt = c.predict(login["token"], view["code"], clinical, technical, ["no_truncation"], f"{reader} says ok",
                            api_name="/submit_rating")
            submitted[reader].append((view["code"], clinical, technical))
            assert nxt["rated"] == len(submitted[reader])
            view = nxt
        return resumed

    try:
        url = server.start()
        with ThreadPoolExecutor(len(READERS)) as pool:
            resumed = list(pool.map(lambda r: score(r, url, FIRST), READERS))
        assert resumed == [1] * len(READERS)

        # Bad values through the API: refused with a message, nothing stored.
        c = client(url)
        tok = c.predict("r00", passwords["pilot"]["r00"], api_name="/login")["token"]
        code = c.predict(tok, api_name="/next_item")["code"]
        for args, message in (((tok, code, 6, 3), "from 1 to 5"), ((tok, code, None, 3), "required"),
                              ((tok, "R-FORGED99", 3, 3), "no item"), ((tok, foreign_code, 3, 3), "not in your queue"),
                              (("not-a-token", code, 3, 3), "log in")):
            with pytest.raises(AppError, match=message):
                c.predict(*args, [], "", api_name="/submit_rating")
        with pytest.raises(AppError, match="wrong name or password"):
            c.predict("r00", "guess", api_name="/login")

        server.kill()
        before = service.ratings_frame("pilot")
        assert len(before) == FIRST * len(READERS)

        url = server.start()
        urls = [url]
        if two_sites:  # a second site on the same database; readers alternate between the two
            urls.append(site_b.start())
        with ThreadPoolExecutor(len(READERS)) as pool:
            resumed = list(pool.map(lambda r: score(r, urls[READERS.index(r) % len(urls)], items - FIRST), READERS))
        assert resumed == [FIRST + 1] * len(READERS)  # everyone resumes at their first unrated item
        if two_sites:
            submitted["r19"][0] = revise_through_both_sites(urls, passwords["pilot"]["r19"], submitted["r19"][0])

        admin = client(url)
        admin_password = service.reset_password("pilot", "admin")
        atok = admin.predict(admin_password, api_name="/admin_login")["token"]
        overview = admin.predict(atok, api_name="/admin_summary")
        assert overview["ratings"] == items * len(READERS) and "ICC(2,1)" in overview["summary"]
        with pytest.raises(AppError):
            admin.predict(tok, api_name="/admin_summary")  # a reader's token opens no admin page
    finally:
        server.stop()
        site_b.stop()

    out = tmp_path / "study.xlsx"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(out), "--resamples", "100"]) == 0
    ratings = pd.read_excel(out, sheet_name="ratings")
    expected = {(r, code, c, t) for r, rows in submitted.items() for code, c, t in rows}
    assert len(ratings) == sum(len(v) for v in submitted.values()) == items * len(READERS)
    assert set(zip(ratings["reader"], ratings["item_code"], ratings["clinical"], ratings["technical"])) == expected
    audit = service.audit_frame("pilot")
    assert (audit["event"] == "submit").sum() == len(ratings)
    assert (audit["event"] == "revise").sum() == (1 if two_sites else 0)
    assert len(service.revisions_frame("pilot")) == (1 if two_sites else 0)
    assert (audit["event"] == "refused").sum() == 4 and (audit["event"] == "login_failed").sum() == 1
