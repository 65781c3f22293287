"""Answer locking: a submitted rating is locked by default (the reader's revision is refused with
one line, a retried identical submission is not), the study lead unlocks one revision, a study made
--revisable keeps revisions, the reader's read-only review, and the schema-2 → 3 migration on
SQLite and PostgreSQL (earlier studies stay revisable)."""

from __future__ import annotations

import contextlib
import io

import pytest
from sqlalchemy import text

import cli
from engine.errors import ConfigError
from postgres_fixtures import postgres_server, study_db  # noqa: F401  (fixtures)
from reader_study_fixtures import write_phantom_dataset, write_predictions
from study.predictions import read_predictions
from study.readers.answer_key import key_frame
from study.readers.service import RatingRefused, ReaderStudyService, StudySpec
from ui.reader_study import review_text


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    data = write_phantom_dataset(root / "data", n=3)
    return data, write_predictions(data, root / "preds")


def make_study(db_spec, phantom, name="pilot", **kw):
    data, preds = phantom
    service = ReaderStudyService(db_spec)
    creds = service.create_study(StudySpec(name=name, arms={a: read_predictions(p) for a, p in preds.items()},
                                           arm_sources={a: str(p) for a, p in preds.items()}, readers=["ann", "ben"],
                                           cases=1, seed=0, data_dir=str(data), **kw))
    return service, creds


def test_locked_after_submit_admin_unlock_and_review(study_db, phantom):
    service, creds = make_study(study_db, phantom)
    assert service.study_info("pilot")["lock_after_submit"] is True
    ann = service.login("pilot", "ann", creds.passwords["ann"])
    first = service.next_item(ann)
    service.submit_rating(ann, first.code, 4, 5, ["no_repetition"], "fine")
    service.submit_rating(ann, first.code, 4, 5, ["no_repetition"], "fine")  # a retried request: accepted, no change
    with pytest.raises(RatingRefused, match=f"item {first.code} is locked: a submitted rating cannot be changed"):
        service.submit_rating(ann, first.code, 2, 5, ["no_repetition"], "fine")
    assert service.item_at(ann, 1).rating["locked"] is True
    assert service.ratings_frame("pilot")[["clinical", "revision"]].values.tolist() == [[4, 1]]

    # The lead unlocks one revision (CLI or admin API); after it the rating is locked again.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["study", "readers", "--db", study_db, "--name", "pilot", "--unlock", f"ann:{first.code}"]) == 0
    assert f"ann's rating of {first.code} unlocked" in out.getvalue()
    assert service.item_at(ann, 1).rating["locked"] is False
    service.submit_rating(ann, first.code, 2, 5, ["no_repetition"], "on reflection")
    with pytest.raises(RatingRefused, match="locked"):
        service.submit_rating(ann, first.code, 3, 5)
    admin = service.login("pilot", "admin", creds.admin_password, role="admin")
    service.admin_unlock(admin, "ann", first.code)
    service.submit_rating(ann, first.code, 3, 5)
    ratings = service.ratings_frame("pilot")
    assert ratings[["clinical", "revision"]].values.tolist() == [[3, 3]] and len(service.revisions_frame("pilot")) == 2
    events = service.audit_frame("pilot")["event"].tolist()
    assert events.count("unlock") == 2 and events.count("revise") == 2 and "refused" in events
    with pytest.raises(ConfigError, match="no rating of item"):
        service.unlock_rating("pilot", "ben", first.code)  # ben has not rated it
    with pytest.raises(ConfigError, match="no reader 'zed'"):
        service.unlock_rating("pilot", "zed", first.code)

    # The reader's review: their own answers in queue order, read-only; ben's are not in it.
    view = service.next_item(ann)
    while not view.done:
        view = service.submit_rating(ann, view.code, 1 + view.position, 2, [], f"item {view.position}")
    service.finish(ann)
    answers = service.review(ann)
    assert [a["position"] for a in answers] == [1, 2, 3] and answers[0]["code"] == first.code
    assert [(a["clinical"], a["technical"], a["comment"]) for a in answers[1:]] == [(3, 2, "item 2"), (4, 2, "item 3")]
    assert all(a["locked"] for a in answers) and answers[0]["revision"] == 3
    assert service.review(service.login("pilot", "ben", creds.passwords["ben"])) == []
    table = review_text(answers)
    assert table.count("\n| ") == 4 and f"| 1 | {first.code} | 3 | 5 |" in table  # header + three answers


def test_revisable_study_and_schema_2_migration(study_db, phantom):
    service, creds = make_study(study_db, phantom, lock_after_submit=False)
    ann = service.login("pilot", "ann", creds.passwords["ann"])
    first = service.next_item(ann)
    service.submit_rating(ann, first.code, 4, 5)
    service.submit_rating(ann, first.code, 2, 5)  # revisable: no unlock needed
    assert service.item_at(ann, 1).rating == {"clinical": 2, "technical": 5, "criteria": [], "comment": "",
                                              "revision": 2, "locked": False}
    service.close()

    # A locked study stored by schema 2 (no locking columns) opens as revisable, ratings kept.
    service, creds = make_study(study_db, phantom, name="old")
    ann = service.login("old", "ann", creds.passwords["ann"])
    first = service.next_item(ann)
    service.submit_rating(ann, first.code, 4, 5)
    with service.engine.begin() as conn:
        conn.execute(text("ALTER TABLE studies DROP COLUMN lock_after_submit"))
        conn.execute(text("ALTER TABLE ratings DROP COLUMN unlocked"))
        conn.execute(text("DROP TABLE answer_key"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    service.close()
    service = ReaderStudyService(study_db, create=False)
    assert service.study_info("old")["lock_after_submit"] is False
    service.submit_rating(ann, first.code, 1, 5)
    assert service.ratings_frame("old")[["clinical", "revision"]].values.tolist() == [[1, 2]]
    assert key_frame(service, "old").empty  # the answer-key table was made by the migration
    assert "schema 3: answer locking" in " ".join(service.audit_frame("old")["detail"].astype(str))
