"""The reader study under attack (issue #15): the blind against a reader who knows the public code
and the seed, login floods and throttling, name enumeration by timing, session expiry, logout and
revoke, unbounded arguments and audit noise, control characters in the export, and schema-1
databases migrated."""

from __future__ import annotations

import random
import sqlite3
import statistics
import threading
import time

import pandas as pd
import pytest
from scipy.stats import binomtest
from sqlalchemy import select

from study.readers import db
from study.readers import service as service_module
from study.readers.export import export_study
from study.readers.service import AccessDenied, RatingRefused, ReaderStudyService, ServiceConfig, StudySpec
from study.readers.throttle import Backoff, BackoffConfig, NoiseLimiter

ARMS = ("baseline", "v2", "v3")


def tables(n_cases: int) -> dict[str, pd.DataFrame]:
    """Predictions of three arms whose texts are identical: only the storage and order could tell
    the arms apart, which is what the attacker below tries."""
    names = [f"case_{i:03d}.nii.gz" for i in range(n_cases)]
    return {arm: pd.DataFrame({"VolumeName": names, "reference": "Normal chest.", "generated": "No acute findings."})
            for arm in ARMS}


def make(tmp_path, n_cases=4, readers=("alice", "bob"), seed=0, name="pilot", config=None, file="study.sqlite"):
    service = ReaderStudyService(tmp_path / file, config=config)
    creds = service.create_study(StudySpec(name=name, arms=tables(n_cases), arm_sources={a: a for a in ARMS},
                                           readers=list(readers), cases=n_cases, seed=seed))
    return service, creds


def true_arms(service) -> dict[str, str]:
    with service.Session.begin() as s:
        return dict(s.execute(select(db.Item.code, db.Arm.name).join(db.Arm, db.Arm.id == db.Item.arm_id)).all())


# -- the blind -----------------------------------------------------------------------------------------
def attacker_guesses(view: list[dict], seed: int, reader: str, n_items: int) -> dict[str, str]:
    """The version-1 public code replayed: items were stored case by case in --arms order (ids
    1..N) and each queue was `random.Random(f"{seed}:{reader}").shuffle(sorted(ids))`. Also tried:
    the arm order in which a case's items first appear in the queue."""
    order = list(range(1, n_items + 1))
    random.Random(f"{seed}:{reader}").shuffle(order)
    by_replay = {v["code"]: ARMS[(order[v["position"] - 1] - 1) % len(ARMS)] for v in view}
    seen: dict[str, int] = {}
    by_appearance = {}
    for v in sorted(view, key=lambda v: v["position"]):
        k = seen.get(v["volume_name"], 0)
        by_appearance[v["code"]] = ARMS[k % len(ARMS)]
        seen[v["volume_name"]] = k + 1
    return {"replay": by_replay, "appearance": by_appearance}


@pytest.mark.parametrize("seed", [0, 7])
def test_attacker_with_code_seed_and_own_view_does_no_better_than_chance(tmp_path, seed):
    n_cases = 60  # 180 items: a binomial test can tell 1/3 from anything useful to an attacker
    service, creds = make(tmp_path, n_cases=n_cases, readers=("alice",), seed=seed)
    token = service.login("pilot", "alice", creds.passwords["alice"])
    view = [service.item_at(token, k).to_dict() for k in range(1, 3 * n_cases + 1)]  # what the API shows alice
    truth = true_arms(service)
    for strategy, guesses in attacker_guesses(view, seed, "alice", 3 * n_cases).items():
        hits = sum(guesses[code] == truth[code] for code in guesses)
        test = binomtest(hits, len(guesses), 1 / len(ARMS), alternative="greater")
        # One-sided at 0.001: by chance this fails once in a thousand runs; the version-1 blind gave 180/180.
        assert test.pvalue > 0.001, f"{strategy}: {hits}/{len(guesses)} arms recovered (p={test.pvalue:.2g})"


def test_seed_picks_the_cases_and_nothing_else(tmp_path):
    chosen, queues, secrets_ = [], [], []
    for k in range(2):
        service = ReaderStudyService(tmp_path / f"s{k}.sqlite")
        creds = service.create_study(StudySpec(name="pilot", arms=tables(40), arm_sources={a: a for a in ARMS},
                                               readers=["alice"], cases=20, seed=3))
        token = service.login("pilot", "alice", creds.passwords["alice"])
        queues.append([service.item_at(token, p).volume_name for p in range(1, 61)])
        chosen.append(sorted(set(queues[-1])))
        secrets_.append(service.study_secret("pilot"))
    assert chosen[0] == chosen[1]  # same seed, same cases
    assert queues[0] != queues[1]  # but the order comes from each study's own secret
    assert secrets_[0] != secrets_[1] and all(len(s) == 64 for s in secrets_)


# -- logins --------------------------------------------------------------------------------------------
def test_password_is_checked_outside_the_write_lock(tmp_path, monkeypatch):
    service, creds = make(tmp_path)
    path = tmp_path / "study.sqlite"
    lock_free = []
    real_check = service_module.check_password

    def probing_check(password, stored):
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")  # succeeds only when no one holds the write lock
            probe.execute("ROLLBACK")
            lock_free.append(True)
        except sqlite3.OperationalError:
            lock_free.append(False)
        finally:
            probe.close()
        return real_check(password, stored)

    monkeypatch.setattr(service_module, "check_password", probing_check)
    service.login("pilot", "alice", creds.passwords["alice"])
    with pytest.raises(AccessDenied):
        service.login("pilot", "bob", "wrong")
    assert lock_free == [True, True]


def test_unknown_names_take_the_same_work_as_known_ones(tmp_path, monkeypatch):
    service, _ = make(tmp_path, config=ServiceConfig(backoff=BackoffConfig(free_failures=100)))
    calls = []
    real_check = service_module.check_password
    monkeypatch.setattr(service_module, "check_password", lambda p, h: calls.append(1) or real_check(p, h))

    def timed(name):
        start = time.perf_counter()
        with pytest.raises(AccessDenied, match="wrong name or password"):
            service.login("pilot", name, "guess")
        return time.perf_counter() - start

    known, unknown = [], []
    for _ in range(5):
        known.append(timed("alice"))
        unknown.append(timed("mallory"))
    assert len(calls) == 10  # every attempt checks one hash, named or not
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 1 / 2.5 < ratio < 2.5, (known, unknown)  # version 1: 85 ms against 22 ms


def test_backoff_doubles_after_free_failures_and_clears_on_success():
    now = [0.0]
    backoff = Backoff(BackoffConfig(free_failures=2, first_wait_s=1.0, max_wait_s=5.0, max_keys=3), clock=lambda: now[0])
    waits = []
    for _ in range(6):
        backoff.failed("k")
        waits.append(backoff.wait_s("k"))
    assert waits == [0, 1, 2, 4, 5, 5]
    now[0] = 4000.0  # an hour after the last failure the count starts again
    assert backoff.wait_s("k") == 0 and backoff.failures("k") == 0
    for _ in range(3):
        backoff.failed("k")
    assert backoff.charge(["k", "new"]) > 0 and backoff.failures("new") == 0  # a waiting key: nothing counted
    backoff.succeeded("k")
    assert backoff.wait_s("k") == 0 and backoff.failures("k") == 0
    assert backoff.charge(["k"]) == 0 and backoff.failures("k") == 1  # counted before the check
    for key in "abcd":  # bounded memory: the oldest key is forgotten
        backoff.failed(key)
    assert backoff.failures("a") == 0 and backoff.failures("d") == 1
    limiter = NoiseLimiter(per_window=2, window_s=10, clock=lambda: now[0])
    assert [limiter.admit("x") for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    now[0] += 20.0
    assert limiter.admit("x") == (True, 2)  # the next written row says how many were left out


def test_login_throttled_per_reader_and_per_client(tmp_path):
    config = ServiceConfig(backoff=BackoffConfig(free_failures=3, first_wait_s=60),
                           client_backoff=BackoffConfig(free_failures=4, first_wait_s=60))
    service, creds = make(tmp_path, readers=("alice", "bob", "carol"), config=config)
    for _ in range(3):
        with pytest.raises(AccessDenied, match="wrong name"):
            service.login("pilot", "alice", "guess", client="10.0.0.1")
    # Per reader: from any client, even with the right password, alice waits now.
    with pytest.raises(AccessDenied, match="too many failed logins: try again in 60 s"):
        service.login("pilot", "alice", creds.passwords["alice"], client="10.0.0.2")
    # Per client: the flooding client is held back for other names too; others log in as usual.
    with pytest.raises(AccessDenied, match="wrong name"):
        service.login("pilot", "carol", "guess", client="10.0.0.1")  # its 4th failure
    with pytest.raises(AccessDenied, match="too many failed logins"):
        service.login("pilot", "bob", creds.passwords["bob"], client="10.0.0.1")
    assert service.login("pilot", "bob", creds.passwords["bob"], client="10.0.0.2")
    # Unknown names back off the same way (a lockout tells nothing about which names exist).
    for k in range(3):
        with pytest.raises(AccessDenied, match="wrong name"):
            service.login("pilot", "mallory", "guess", client=f"10.0.1.{k}")
    with pytest.raises(AccessDenied, match="too many failed logins"):
        service.login("pilot", "mallory", "guess", client="10.0.0.4")


def test_login_flood_leaves_other_readers_submitting(tmp_path, monkeypatch):
    """200 wrong passwords from 4 threads while bob scores: only the free failures are hashed and
    bob's submissions stay fast (version 1: every attempt hashed inside the write lock, p95 1.2 s)."""
    service, creds = make(tmp_path, n_cases=20)
    hashed = []
    real_check = service_module.check_password
    monkeypatch.setattr(service_module, "check_password", lambda p, h: hashed.append(1) or real_check(p, h))
    bob = service.login("pilot", "bob", creds.passwords["bob"], client="10.0.0.2")
    view = service.next_item(bob)
    baseline = []
    for _ in range(10):  # bob's submissions on this machine, now, without a flood
        start = time.perf_counter()
        view = service.submit_rating(bob, view.code, 3, 4, [], "ok")
        baseline.append(time.perf_counter() - start)
    hashed.clear()
    refused = []
    stop = threading.Event()

    def flood(k):
        for i in range(50):
            try:
                service.login("pilot", "alice", f"guess{k}-{i}", client="10.0.0.66")
            except AccessDenied as err:
                refused.append(err.problem)
            time.sleep(0.02)  # 4 clients at up to 50 attempts/s each: a flood, not a busy loop for the GIL

    latencies = []

    def score():
        view = service.next_item(bob)
        while not view.done and not stop.is_set():
            start = time.perf_counter()
            view = service.submit_rating(bob, view.code, 3, 4, [], "ok")
            latencies.append(time.perf_counter() - start)

    scorer = threading.Thread(target=score)
    scorer.start()
    flooders = [threading.Thread(target=flood, args=(k,)) for k in range(4)]
    for t in flooders:
        t.start()
    for t in flooders:
        t.join()
    stop.set()
    scorer.join()
    # Counted before hashing (no race lets a thread through on a spent free failure); later ones only
    # as each backoff (1 s, 2 s, ...) runs out.
    assert len(refused) == 200 and len(hashed) <= BackoffConfig().free_failures + 2
    assert sum("too many failed logins" in r for r in refused) >= 190
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else latencies[0]
    # bench/login_flood.py measures the 0.2 s target; here a shared CPU gets slack over bob's own baseline.
    calm = max(baseline)
    assert p95 < 0.3 + 3 * calm, f"bob's submit p95 {p95:.3f} s during the flood, {calm:.3f} s without"
    audit = service.audit_frame("pilot")
    assert (audit["event"].isin(["login_failed", "login_throttled"])).sum() <= 2 * ServiceConfig().noise_per_minute


# -- sessions ------------------------------------------------------------------------------------------
def test_expired_and_logged_out_sessions_are_refused_and_admin_revokes(tmp_path):
    service, creds = make(tmp_path, config=ServiceConfig(session_ttl_s=0.6))
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    assert service.next_item(alice).code
    time.sleep(0.8)
    with pytest.raises(AccessDenied, match="expired"):
        service.next_item(alice)

    service.config.session_ttl_s = 3600.0
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    service.logout(alice)
    with pytest.raises(AccessDenied, match="log in"):
        service.submit_rating(alice, "R-ANY", 3, 3)

    alice = service.login("pilot", "alice", creds.passwords["alice"])
    bob = service.login("pilot", "bob", creds.passwords["bob"])
    admin = service.login("pilot", "admin", creds.admin_password, role="admin")
    with pytest.raises(AccessDenied):
        service.admin_revoke(bob, "alice")  # a reader cannot revoke
    assert service.admin_revoke(admin, "alice") == 1
    with pytest.raises(AccessDenied):
        service.next_item(alice)
    assert service.next_item(bob).code  # others keep working
    assert service.admin_revoke(admin) == 1  # every reader: bob's session
    with pytest.raises(AccessDenied):
        service.next_item(bob)
    assert service.admin_study(admin) == "pilot"  # the admin's own session stays
    assert service.revoke_sessions("pilot") == 1  # the lead's CLI ends every login, the admin's too
    events = service.audit_frame("pilot")["event"].tolist()
    assert events.count("logout") == 1 and events.count("revoke") == 3


# -- bounded input -------------------------------------------------------------------------------------
def test_long_arguments_and_unauthenticated_noise_stay_small(tmp_path):
    service, creds = make(tmp_path)
    path = tmp_path / "study.sqlite"
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    code = service.next_item(alice).code
    huge = "X" * 2_000_000
    for args in ((alice, huge, 3, 3), (alice, code, huge, 3), (alice, code, 3, 3, [huge])):
        with pytest.raises(RatingRefused) as err:
            service.submit_rating(*args)
        assert len(str(err.value)) < 300  # the value is not echoed back
    with pytest.raises(RatingRefused, match="10,000"):
        service.submit_rating(alice, code, 3, 3, [], huge)
    with pytest.raises(RatingRefused, match="whole number"):
        service.item_at(alice, "9" * 5000)
    for args in (("pilot", huge, "pw"), ("pilot", "alice", huge)):
        with pytest.raises(AccessDenied, match="wrong name or password"):
            service.login(*args)
    for _ in range(300):  # unauthenticated noise: forged tokens and bad logins
        with pytest.raises(AccessDenied):
            service.next_item(huge)
    audit = service.audit_frame()
    assert audit["detail"].str.len().max() <= service_module.AUDIT_DETAIL_MAX
    assert audit["item_code"].dropna().str.len().max() <= service_module.CODE_MAX
    assert (audit["event"] == "bad_session").sum() == ServiceConfig().noise_per_minute
    service.close()
    size = path.stat().st_size + (path.with_name(path.name + "-wal").stat().st_size
                                  if path.with_name(path.name + "-wal").exists() else 0)
    assert size < 2_000_000  # version 1 stored every 2 MB value


# -- export --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_export_with_control_characters_and_no_temp_file_left(tmp_path, suffix, monkeypatch):
    service, creds = make(tmp_path, n_cases=1)
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    view = service.next_item(alice)
    comments = ["line\x0bbreak", "bell\x07 and unit\x1f separator", "=1+1"]
    for comment in comments:
        view = service.submit_rating(alice, view.code, 3, 3, [], comment)
    out_dir = tmp_path / "out"
    out = out_dir / f"ratings{suffix}"
    assert export_study(service, "pilot", out, resamples=50) == 3
    back = pd.read_excel(out, sheet_name="ratings") if suffix == ".xlsx" else pd.read_csv(out)
    assert sorted(back["comment"]) == sorted(["line\nbreak", "bell and unit separator", "'=1+1"])
    assert [p.name for p in out_dir.iterdir()] == [out.name]

    # A failure half-way leaves neither the target nor a temporary file.
    out.unlink()
    monkeypatch.setattr(pd.DataFrame, "to_csv" if suffix == ".csv" else "to_excel",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_study(service, "pilot", out, resamples=50)
    assert list(out_dir.iterdir()) == []


# -- migration -----------------------------------------------------------------------------------------
def test_schema_1_database_is_migrated(tmp_path):
    service, creds = make(tmp_path, n_cases=3)
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    view = service.next_item(alice)
    service.submit_rating(alice, view.code, 2, 4)
    service.close()
    path = tmp_path / "study.sqlite"
    con = sqlite3.connect(path)  # back to the version-1 layout
    con.executescript("""
        ALTER TABLE studies DROP COLUMN secret;
        ALTER TABLE studies DROP COLUMN lock_after_submit;
        ALTER TABLE ratings DROP COLUMN unlocked;
        DROP TABLE login_sessions;
        CREATE TABLE login_sessions (token_hash VARCHAR(64) PRIMARY KEY,
            reader_id INTEGER NOT NULL REFERENCES readers(id) ON DELETE CASCADE, created_at DATETIME NOT NULL);
        INSERT INTO login_sessions VALUES ('x', 1, '2026-01-01');
        UPDATE schema_version SET version = 1;
    """)
    con.close()
    service = ReaderStudyService(path)
    with pytest.raises(AccessDenied):
        service.next_item(alice)  # version-1 sessions had no expiry: ended
    alice = service.login("pilot", "alice", creds.passwords["alice"])
    positions = [service.item_at(alice, p).code for p in range(1, 10)]
    assert len(set(positions)) == 9
    ratings = service.ratings_frame("pilot")
    assert ratings[["item_code", "clinical", "technical"]].values.tolist() == [[view.code, 2, 4]]
    assert len(service.study_secret("pilot")) == 64
    assert "migrate" in service.audit_frame("pilot")["event"].tolist()


def test_server_handlers_pass_the_client_address_and_offer_logout_and_revoke(tmp_path):
    from types import SimpleNamespace

    from ui.reader_study import ReaderStudyAppConfig, ReaderStudyHandlers, build_reader_study_app

    service, creds = make(tmp_path, config=ServiceConfig(client_backoff=BackoffConfig(free_failures=2, first_wait_s=60)))
    config = ReaderStudyAppConfig(db_path=tmp_path / "study.sqlite", study="pilot",
                                  service=ServiceConfig(client_backoff=BackoffConfig(free_failures=2, first_wait_s=60)))
    h = ReaderStudyHandlers(config)
    attacker = SimpleNamespace(client=SimpleNamespace(host="203.0.113.5"))
    import gradio as gr

    for name in ("alice", "bob"):
        with pytest.raises(gr.Error, match="wrong name"):
            h.login(name, "guess", attacker)
    with pytest.raises(gr.Error, match="too many failed logins"):  # the address is held back, whatever the name
        h.login("carol", "guess", attacker)
    reader = SimpleNamespace(client=SimpleNamespace(host="192.0.2.1"))
    alice = h.login("alice", creds.passwords["alice"], reader)["token"]
    bob = h.login("bob", creds.passwords["bob"], reader)["token"]
    admin = h.admin_login(creds.admin_password, reader)["token"]
    assert h.logout(alice) == {"logged_out": True}
    with pytest.raises(gr.Error, match="log in"):
        h.next_item(alice)
    assert h.admin_revoke(admin, "bob") == {"ended": 1}
    with pytest.raises(gr.Error, match="log in"):
        h.next_item(bob)
    with pytest.raises(gr.Error, match="no reader 'nobody'"):
        h.admin_revoke(admin, "nobody")
    app = build_reader_study_app(config)
    api_names = {fn.api_name for fn in app.fns.values()}
    assert {"login", "logout", "admin_revoke", "submit_rating"} <= api_names
    missing = tmp_path / "nowhere.sqlite"
    with pytest.raises(Exception, match="no study database here"):
        ReaderStudyHandlers(ReaderStudyAppConfig(db_path=missing, study="pilot"))
    assert not missing.exists()
