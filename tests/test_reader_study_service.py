"""Reader-study storage and service: creating a study from phantom predictions, logins, queues,
submission and revision, refusals, the unique constraint, concurrency and schema versions."""

from __future__ import annotations

import sqlite3
import threading

import pandas as pd
import pytest
from sqlalchemy.exc import IntegrityError

from engine.errors import ConfigError, DatasetError
from postgres_fixtures import postgres_server, study_db  # noqa: F401 (fixtures)
from reader_study_fixtures import ARMS, write_phantom_dataset, write_predictions
from study.predictions import read_predictions
from study.readers import db
from study.readers.service import AccessDenied, RatingRefused, ReaderStudyService, StudySpec, sample_cases


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    data = write_phantom_dataset(root / "data", n=6)
    return data, write_predictions(data, root / "preds")


def make_study(tmp_path, phantom, readers=("alice", "bob"), cases=4, name="pilot", db_spec=None, **kw):
    data, preds = phantom
    service = ReaderStudyService(db_spec or tmp_path / "study.sqlite")
    creds = service.create_study(StudySpec(name=name, arms={a: read_predictions(p) for a, p in preds.items()},
                                           arm_sources={a: str(p) for a, p in preds.items()}, readers=list(readers),
                                           cases=cases, seed=0, data_dir=str(data), **kw))
    return service, creds


def test_create_assigns_every_item_to_every_reader_in_own_order(tmp_path, phantom):
    service, creds = make_study(tmp_path, phantom)
    info = service.study_info("pilot")
    assert info["cases"] == 4 and info["items"] == 12 and info["arms"] == list(ARMS)
    tokens = {r: service.login("pilot", r, creds.passwords[r]) for r in ("alice", "bob")}
    orders = {}
    for reader, tok in tokens.items():
        codes = [service.item_at(tok, k).code for k in range(1, 13)]
        assert len(set(codes)) == 12
        orders[reader] = codes
    assert set(orders["alice"]) == set(orders["bob"]) and orders["alice"] != orders["bob"]
    view = service.item_at(tokens["alice"], 1)
    # Readers see a code and a report, never an arm name or the reference (not shown in this study).
    assert view.reference is None and not any(a in view.code for a in ARMS)
    assert not {"arm", "run", "variant"} & set(view.to_dict())
    # Passwords only as salted hashes: two readers' hashes differ and no password is in the file.
    raw = (tmp_path / "study.sqlite").read_bytes() + (tmp_path / "study.sqlite-wal").read_bytes()
    assert all(p.encode() not in raw for p in [*creds.passwords.values(), creds.admin_password])
    with pytest.raises(ConfigError, match="already exists"):
        make_study(tmp_path, phantom)


def test_create_refuses_bad_requests(tmp_path, phantom):
    with pytest.raises(DatasetError, match="only 6 cases"):
        make_study(tmp_path, phantom, cases=7, name="too-many")
    with pytest.raises(ConfigError, match="distinct"):
        make_study(tmp_path, phantom, readers=("ann", "ann"), name="dup")


def test_submit_resume_revise_and_finish(tmp_path, phantom, study_db):
    service, creds = make_study(tmp_path, phantom, db_spec=study_db, cases=2, lock_after_submit=False)
    with pytest.raises(AccessDenied):
        service.login("pilot", "alice", "wrong")
    tok = service.login("pilot", "alice", creds.passwords["alice"])
    first = service.next_item(tok)
    assert (first.position, first.total, first.rated) == (1, 6, 0)
    second = service.submit_rating(tok, first.code, 4, "5", ["findings_correct", "no_repetition"], "fine")
    assert (second.position, second.rated) == (2, 1)
    service.submit_rating(tok, second.code, 2, 3)

    # A new login (another browser, or after a restart) resumes at the first unrated item.
    tok2 = service.login("pilot", "alice", creds.passwords["alice"])
    assert service.next_item(tok2).position == 3

    # Revising keeps one live rating and the old version in the revisions table; a retried
    # identical submission changes nothing.
    service.submit_rating(tok2, first.code, 3, 5, ["no_repetition"], "on reflection")
    service.submit_rating(tok2, first.code, 3, 5, ["no_repetition"], "on reflection")
    ratings = service.ratings_frame("pilot")
    assert len(ratings) == 2
    row = ratings.set_index("item_code").loc[first.code]
    assert (row["clinical"], row["technical"], row["revision"], row["comment"]) == (3, 5, 2, "on reflection")
    revisions = service.revisions_frame("pilot")
    columns = ["item_code", "revision", "clinical", "technical", "comment"]
    assert revisions[columns].values.tolist() == [[first.code, 1, 4, 5, "fine"]]
    assert service.item_at(tok2, 1).rating["clinical"] == 3

    with pytest.raises(RatingRefused, match="still unrated"):
        service.finish(tok2)
    view = service.next_item(tok2)
    while not view.done:
        view = service.submit_rating(tok2, view.code, 3, 3)
    assert (view.rated, view.total, view.code) == (6, 6, None)
    assert service.finish(tok2).finished
    with pytest.raises(RatingRefused, match="finished"):
        service.submit_rating(tok2, first.code, 1, 1)
    events = service.audit_frame("pilot")["event"].tolist()
    assert events.count("submit") == 6 and events.count("revise") == 1 and "login_failed" in events and "finish" in events


def test_bad_values_are_refused_and_logged(tmp_path, phantom, study_db):
    service, creds = make_study(tmp_path, phantom, db_spec=study_db, cases=2)
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    bob = service.login("pilot", "bob", creds.passwords["bob"])
    code = service.next_item(alice).code
    bad = [
        ((alice, code, 6, 3), "from 1 to 5"),
        ((alice, code, 0, 3), "from 1 to 5"),
        ((alice, code, 3, 2.5), "from 1 to 5"),
        ((alice, code, "x", 3), "from 1 to 5"),
        ((alice, code, None, 3), "required"),
        ((alice, code, 3, ""), "required"),
        ((alice, "R-FORGED00", 3, 3), "no item"),
    ]
    for args, message in bad:
        with pytest.raises(RatingRefused, match=message):
            service.submit_rating(*args)
    with pytest.raises(RatingRefused, match="unknown rubric criteria"):
        service.submit_rating(alice, code, 3, 3, ["made_up"])
    with pytest.raises(AccessDenied):
        service.submit_rating("forged-token", code, 3, 3)
    # Another study's item is not in alice's queue.
    other, other_creds = make_study(tmp_path, phantom, db_spec=study_db, cases=1, name="other", readers=("carol",))
    foreign = other.next_item(other.login("other", "carol", other_creds.passwords["carol"])).code
    with pytest.raises(RatingRefused, match="not in your queue"):
        service.submit_rating(alice, foreign, 3, 3)
    # A reader cannot use the admin login, nor a reader's token the admin pages.
    with pytest.raises(AccessDenied):
        service.login("pilot", "alice", creds.passwords["alice"], role="admin")
    with pytest.raises(AccessDenied):
        service.admin_study(bob)
    assert service.ratings_frame("pilot").empty
    audit = service.audit_frame("pilot")
    assert (audit["event"] == "refused").sum() == len(bad) + 2
    assert audit.loc[audit["event"] == "refused", "detail"].str.contains("from 1 to 5").sum() == 4


def test_unique_constraint_holds_one_live_rating(tmp_path, phantom, study_db):
    service, creds = make_study(tmp_path, phantom, db_spec=study_db, cases=1)
    tok = service.login("pilot", "alice", creds.passwords["alice"])
    service.submit_rating(tok, service.next_item(tok).code, 3, 3)
    with service.Session() as s:
        r = s.query(db.Rating).one()
        s.add(db.Rating(reader_id=r.reader_id, item_id=r.item_id, clinical=1, technical=1))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        s.add(db.Rating(reader_id=r.reader_id, item_id=r.item_id + 1, clinical=9, technical=1))
        with pytest.raises(IntegrityError):  # the 1..5 check lives in the schema too
            s.commit()


def test_concurrent_readers_lose_nothing(tmp_path, phantom):
    # SQLite only: on PostgreSQL, tests/test_reader_study_postgres.py sends each answer through two sites at once.
    names = [f"reader{i:02d}" for i in range(20)]
    service, creds = make_study(tmp_path, phantom, readers=names, cases=2)
    errors = []

    def score(name):
        try:
            tok = service.login("pilot", name, creds.passwords[name])
            view = service.next_item(tok)
            while not view.done:
                view = service.submit_rating(tok, view.code, 1 + view.position % 5, 5 - view.position % 5)
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=score, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ratings = service.ratings_frame("pilot")
    assert len(ratings) == 20 * 6 and not ratings.duplicated(["reader", "item_code"]).any()
    assert set(service.progress("pilot")["rated"]) == {6}


def test_database_settings_and_schema_versions(tmp_path, phantom, monkeypatch):
    service, _ = make_study(tmp_path, phantom, cases=1)
    path = tmp_path / "study.sqlite"
    with service.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    service.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone() == (db.SCHEMA_VERSION,)
    con.close()

    # An upgrade runs the registered migration once and records the new version.
    calls = []

    def to_v2(conn):
        calls.append(1)
        conn.exec_driver_sql("ALTER TABLE studies ADD COLUMN note TEXT")

    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    monkeypatch.setitem(db.MIGRATIONS, db.SCHEMA_VERSION - 1, to_v2)
    ReaderStudyService(path).close()
    ReaderStudyService(path).close()
    con = sqlite3.connect(path)
    assert calls == [1] and con.execute("SELECT version FROM schema_version").fetchone() == (db.SCHEMA_VERSION,)
    assert "note" in [r[1] for r in con.execute("PRAGMA table_info(studies)")]
    con.close()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="newer"):
        ReaderStudyService(path)

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(ConfigError, match="other tables"):
        ReaderStudyService(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable study database"):
        ReaderStudyService(junk)


def test_stratified_sampling_keeps_proportions():
    names = [f"c{i:03d}" for i in range(100)]
    strata = {n: ("rare" if i < 10 else "common" if i < 70 else "normal") for i, n in enumerate(names)}
    chosen = sample_cases(names, 20, seed=3, strata=strata)
    counts = pd.Series([strata[n] for n in chosen]).value_counts().to_dict()
    assert counts == {"common": 12, "normal": 6, "rare": 2}
    assert sample_cases(names, 20, seed=3, strata=strata) == chosen
    assert sample_cases(names, 20, seed=4, strata=strata) != chosen
    assert len(set(sample_cases(names, 30, seed=0))) == 30
