"""The reader study on PostgreSQL (a throwaway server, tests/postgres_fixtures.py): two sites (two
services, each with its own engine and pool) on one database keep one live rating per reader and
item when the same reader's answers reach both at once; the schema is made once when two sites
start together and the version-1 migration runs on PostgreSQL too; a bad or unreachable URL is one
line that names host and port and never shows the password."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

import cli
from engine.errors import ConfigError
from postgres_fixtures import free_port, postgres_server, postgres_url  # noqa: F401 (fixtures)
from reader_study_fixtures import write_phantom_dataset, write_predictions
from study.predictions import read_predictions
from study.readers import db
from study.readers.service import AccessDenied, ReaderStudyService, StudySpec

READERS = [f"r{i}" for i in range(4)]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    data = write_phantom_dataset(root / "data", n=3)
    return data, write_predictions(data, root / "preds")


def create(url, phantom, cases=1):
    data, preds = phantom
    service = ReaderStudyService(url)
    creds = service.create_study(StudySpec(name="pilot", arms={a: read_predictions(p) for a, p in preds.items()},
                                           arm_sources={a: str(p) for a, p in preds.items()}, readers=READERS,
                                           cases=cases, seed=0, data_dir=str(data), lock_after_submit=False))
    return service, creds


def test_two_sites_lose_and_double_nothing(postgres_url, phantom):
    site_a, creds = create(postgres_url, phantom)
    site_b = ReaderStudyService(postgres_url, create=False)
    items = site_a.study_info("pilot")["items"]
    barriers = {n: threading.Barrier(2) for n in READERS}  # a reader's two sites send each answer together

    def reader(name: str, site: int):
        """Every answer goes through both sites at once (site 0 sends the first, then each revision
        alternates its values), as a double click that reaches two servers would."""
        service = (site_a, site_b)[site]
        tok = service.login("pilot", name, creds.passwords[name])
        codes = [service.item_at(tok, k).code for k in range(1, items + 1)]
        for round_ in range(2):
            for code in codes:
                barriers[name].wait(timeout=60)
                service.submit_rating(tok, code, 1 + (round_ + site) % 5, 3)
        return codes

    with ThreadPoolExecutor(2 * len(READERS)) as pool:
        futures = [pool.submit(reader, n, site) for n in READERS for site in (0, 1)]
        for f in futures:
            f.result()
    ratings = site_a.ratings_frame("pilot")
    assert len(ratings) == len(READERS) * items and not ratings.duplicated(["reader", "item_code"]).any()
    revisions = site_b.revisions_frame("pilot")
    # Each revision row is one superseded version: a rating at revision n has exactly n - 1 of them.
    assert revisions.groupby(["reader", "item_code"]).size().sum() == (ratings["revision"] - 1).sum()
    assert not revisions.duplicated(["reader", "item_code", "revision"]).any()
    audit = site_a.audit_frame("pilot")
    assert (audit["event"] == "submit").sum() == len(ratings)
    assert (audit["event"] == "revise").sum() == len(revisions)
    # Sent values 1,2 (site 0) and 2,3 (site 1) over two rounds: whichever came last is live.
    assert set(ratings["clinical"]) <= {1, 2, 3}
    site_a.close()
    site_b.close()


def test_schema_made_once_and_version_1_migrated(postgres_url, phantom):
    with ThreadPoolExecutor(3) as pool:  # three sites starting together on an empty database
        services = list(pool.map(lambda _: ReaderStudyService(postgres_url), range(3)))
    for s in services:
        s.close()
    service, creds = create(postgres_url, phantom, cases=1)
    alice = service.login("pilot", "r0", creds.passwords["r0"])
    view = service.next_item(alice)
    service.submit_rating(alice, view.code, 2, 4)
    with service.engine.begin() as conn:  # back to the version-1 layout
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar_one() == 1
        conn.execute(text("ALTER TABLE studies DROP COLUMN secret"))
        conn.execute(text("ALTER TABLE studies DROP COLUMN lock_after_submit"))
        conn.execute(text("ALTER TABLE ratings DROP COLUMN unlocked"))
        conn.execute(text("DROP TABLE login_sessions"))
        conn.execute(text("CREATE TABLE login_sessions (token_hash VARCHAR(64) PRIMARY KEY, reader_id INTEGER "
                          "NOT NULL REFERENCES readers(id) ON DELETE CASCADE, created_at TIMESTAMP NOT NULL)"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    service.close()
    service = ReaderStudyService(postgres_url, create=False)
    with pytest.raises(AccessDenied):
        service.next_item(alice)  # version-1 sessions ended
    alice = service.login("pilot", "r0", creds.passwords["r0"])
    assert len({service.item_at(alice, p).code for p in range(1, 4)}) == 3
    assert service.ratings_frame("pilot")[["item_code", "clinical", "technical"]].values.tolist() == [[view.code, 2, 4]]
    assert len(service.study_secret("pilot")) == 64 and "migrate" in service.audit_frame("pilot")["event"].tolist()
    assert service.study_info("pilot")["lock_after_submit"] is False  # schema 3 keeps an earlier study revisable
    with service.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": db.SCHEMA_VERSION + 1})
    service.close()
    with pytest.raises(ConfigError, match="newer"):
        ReaderStudyService(postgres_url)


def test_bad_urls_give_one_line_without_the_password(postgres_server, capsys):
    port = free_port()
    argv = ["study", "summary", "--name", "pilot", "--db"]
    assert cli.main([*argv, f"postgresql://ann:s3cret@127.0.0.1:{port}/study"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot reach the study database at 127.0.0.1:{port}" in err and "refused" in err
    assert "s3cret" not in err and "ann:***@" in err
    empty = postgres_server.new_database()
    assert cli.main([*argv, empty]) == 1
    assert "no study tables" in capsys.readouterr().err
    assert cli.main([*argv, "mysql://ann:s3cret@db/x"]) == 1
    err = capsys.readouterr().err
    assert "not mysql" in err and "s3cret" not in err
    with postgres_server_engine(empty) as conn:
        conn.execute(text("CREATE TABLE t (x int)"))
    assert cli.main([*argv, empty]) == 1
    assert "other tables" in capsys.readouterr().err


def postgres_server_engine(url):
    from sqlalchemy import create_engine

    return create_engine(db.database_url(url)).begin()
