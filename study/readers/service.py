"""What readers and the study lead can do, as plain functions of the database: create a study,
log in, get the next item, submit or revise a rating, finish, watch progress.

Every change is one transaction. Refusals (bad login, bad token, a score outside 1–5, a forged
item code, another reader's item) raise a typed error with a message a reader can act on, and are
written to the audit log in a transaction of their own first, so the refusal is on record even
though the change is not made. Unauthenticated refusals are rate-limited in the log (NoiseLimiter)
and every argument has a length limit, so no caller can grow the database without bound.

The blind: a study's cases are picked by its seed; everything a reader could use to tell the arms
apart (the order of arms within a case, each reader's queue order, item codes, the blind export's
labels) comes from `secrets`, keyed by a per-study secret kept in the database (db.keyed_rng).

Logins: a password is checked outside any write transaction (scrypt takes tens of milliseconds and
must not hold up other readers' submissions), unknown names are checked against a dummy hash (the
same work as a known one), and failures back off per reader name and per client (throttle.Backoff).
Sessions expire (ServiceConfig.session_ttl_s), can be ended by logout, and revoked by the admin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine.config import JsonConfig
from engine.errors import ConfigError, DatasetError, Rad3dError
from study.readers import db
from study.readers.db import (
    Arm,
    Assignment,
    AuditEvent,
    Case,
    Item,
    LoginSession,
    Rating,
    RatingRevision,
    Reader,
    Study,
)
from study.readers.rubric import ALL_CRITERIA, SCALE
from study.readers.throttle import Backoff, BackoffConfig, NoiseLimiter

# scrypt at n=2**14, r=8: ~16 MiB and tens of milliseconds per check, slow enough against guessing.
_SCRYPT = dict(n=2**14, r=8, p=1, dklen=32)
ADMIN = "admin"

# Length limits on every argument a caller controls (characters). Longer values are refused
# without being echoed or stored.
NAME_MAX = 200
PASSWORD_MAX = 1024
TOKEN_MAX = 128
CODE_MAX = 40
COMMENT_MAX = 10_000
AUDIT_DETAIL_MAX = 500  # audit rows store at most this much detail


@dataclass
class ServiceConfig(JsonConfig):
    session_ttl_s: float = 12 * 3600.0  # a login lasts a working day; then the reader logs in again
    backoff: BackoffConfig = field(default_factory=BackoffConfig)  # per reader name (known or not)
    client_backoff: BackoffConfig = field(default_factory=lambda: BackoffConfig(free_failures=20))  # per address
    noise_per_minute: int = 20  # unauthenticated audit rows per kind and client per minute
    hash_slots: int = 1  # password checks at once: scrypt is CPU- and memory-heavy, leave cores to submissions
    # Reference only (bench/login_flood.py measures today's behaviour against the old one): False
    # checks passwords inside the write transaction, with no throttle and no dummy hash.
    guarded_login: bool = True


class AccessDenied(Rad3dError):
    """Wrong name or password, an unknown or expired session, or a reader asking for admin pages."""


class RatingRefused(Rad3dError):
    """A submission that cannot be stored as given (bad score, forged or foreign item, finished reader)."""


# -- passwords and tokens --------------------------------------------------------------------------
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2)
    return hmac.compare_digest(got.hex(), digest)


def _short(value) -> str:
    """A caller's value for a message: repr, cut short (never echo a megabyte back)."""
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "...'"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(9)


def new_item_code() -> str:
    # Random, not derived from arm or case: the code must say nothing about where a report came from.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "R-" + "".join(secrets.choice(alphabet) for _ in range(8))


# -- views handed to the UI ------------------------------------------------------------------------
@dataclass
class ItemView:
    """What a reader sees: one report of their queue (or, when `done`, that nothing is left)."""

    position: int  # 1-based place in the reader's queue of this item (0 when done)
    total: int
    rated: int
    done: bool  # every item rated
    finished: bool  # the reader pressed Finish: no more revisions
    code: str | None = None
    volume_name: str | None = None
    report: str | None = None
    reference: str | None = None  # only when the study shows it
    rating: dict | None = None  # the reader's live rating of this item, when revising

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StudySpec:
    name: str
    arms: dict[str, pd.DataFrame]  # arm name → predictions table (read_predictions' columns)
    arm_sources: dict[str, str]
    readers: list[str]
    cases: int
    seed: int = 0
    show_reference: bool = False
    data_dir: str | None = None
    lock_after_submit: bool = True  # a submitted rating cannot be revised by its reader
    strata: dict[str, str] | None = None  # VolumeName → stratum, for stratified sampling
    restrict_to: set[str] | None = None  # only these VolumeNames (e.g. those with a volume in DATA)


@dataclass
class Credentials:
    study: str
    passwords: dict[str, str]  # reader → password
    admin_password: str | None = None
    lines: list[str] = field(default_factory=list)


# -- sampling ---------------------------------------------------------------------------------------
def sample_cases(names: list[str], n: int, seed: int, strata: dict[str, str] | None = None) -> list[str]:
    """n names drawn at random without replacement; with strata, each stratum gets its
    proportional share (largest remainders), so rare findings are not left out by chance."""
    names = sorted(names)
    if n >= len(names):
        return names
    rng = random.Random(seed)
    if not strata:
        return sorted(rng.sample(names, n))
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(strata.get(name, "(none)"), []).append(name)
    quotas = {g: n * len(v) / len(names) for g, v in groups.items()}
    take = {g: int(q) for g, q in quotas.items()}
    left = n - sum(take.values())
    for g in sorted(groups, key=lambda g: (-(quotas[g] - take[g]), g))[:left]:
        take[g] += 1
    chosen = [name for g in sorted(groups) for name in rng.sample(groups[g], take[g])]
    return sorted(chosen)


def reader_order(item_ids: list[int], secret: str, reader_id: int) -> list[int]:
    """A reader's queue: the study's items shuffled by the study's secret (not by the seed, not by
    the reader's name: both are known to readers)."""
    order = sorted(item_ids)
    db.keyed_rng(secret, f"queue:{reader_id}").shuffle(order)
    return order


# -- the service ------------------------------------------------------------------------------------
class ReaderStudyService:
    def __init__(self, db_path: str | Path, *, create: bool = True, config: ServiceConfig | None = None):
        self.path = db.display_name(db_path)  # a SQLite path, or a URL without its password
        self.config = config or ServiceConfig()
        self.engine = db.open_engine(db_path, create=create)
        self.Session = db.session_factory(self.engine)
        self.ReadSession = db.session_factory(self.engine, read_only=True)
        self.backoff = Backoff(self.config.backoff)
        self.client_backoff = Backoff(self.config.client_backoff)
        self.noise = NoiseLimiter(per_window=self.config.noise_per_minute)
        self._hashing = threading.BoundedSemaphore(self.config.hash_slots)
        self._dummy_hash = hash_password(secrets.token_urlsafe(12))  # checked for unknown names

    def close(self) -> None:
        self.engine.dispose()

    # -- audit --------------------------------------------------------------------------------------
    def _audit(self, s, study_id, reader_id, event: str, item_code: str | None = None, detail: str = "") -> None:
        s.add(AuditEvent(study_id=study_id, reader_id=reader_id, event=event,
                         item_code=None if item_code is None else str(item_code)[:CODE_MAX],
                         detail=detail[:AUDIT_DETAIL_MAX]))

    def _refuse(self, error: type[Rad3dError], message: str, *, study_id=None, reader_id=None, event="refused",
                item_code: str | None = None, noise: str | None = None) -> None:
        """Record the refusal, then raise it. `noise` (a client key) marks an unauthenticated
        refusal: those are written at most NoiseLimiter's rate, the rest counted in the next row."""
        write, suppressed = (True, 0) if noise is None else self.noise.admit(f"{event}:{noise}")
        if write:
            detail = message + (f" (+{suppressed} like it not recorded)" if suppressed else "")
            with self.Session.begin() as s:
                self._audit(s, study_id, reader_id, event, item_code, detail)
        raise error(message)

    # -- creating -----------------------------------------------------------------------------------
    def create_study(self, spec: StudySpec) -> Credentials:
        if not spec.name.strip():
            raise ConfigError("a study needs a name")
        if not spec.arms:
            raise ConfigError("a study needs at least one arm (--arms NAME=PREDICTIONS.csv)")
        readers = [r.strip() for r in spec.readers if r.strip()]
        if not readers:
            raise ConfigError("a study needs at least one reader (--readers alice,bob)")
        if len(set(readers)) != len(readers) or ADMIN in readers:
            raise ConfigError(f"reader names must be distinct and not {ADMIN!r}: {readers}")
        if spec.cases < 1:
            raise ConfigError(f"--cases must be at least 1, got {spec.cases}")
        tables = {arm: df.set_index("VolumeName") for arm, df in spec.arms.items()}
        common = set.intersection(*(set(t.index) for t in tables.values()))
        if spec.restrict_to is not None:
            common &= spec.restrict_to
        if not common:
            raise DatasetError("the arms' predictions share no VolumeName" +
                               (" that is in the dataset" if spec.restrict_to is not None else ""),
                               ", ".join(spec.arm_sources.values()))
        if spec.cases > len(common):
            raise DatasetError(f"--cases {spec.cases} asked, but only {len(common)} cases are in every arm",
                               ", ".join(spec.arm_sources.values()))
        chosen = sample_cases(sorted(common), spec.cases, spec.seed, spec.strata)
        first = next(iter(tables.values()))
        creds = Credentials(spec.name, {r: new_password() for r in readers}, new_password())
        try:
            with self.Session.begin() as s:
                study = Study(name=spec.name, seed=spec.seed, secret=db.new_secret(),
                              show_reference=spec.show_reference, data_dir=spec.data_dir,
                              lock_after_submit=spec.lock_after_submit)
                s.add(study)
                s.flush()
                arms = {}
                for arm in spec.arms:
                    arms[arm] = Arm(study_id=study.id, name=arm, source=spec.arm_sources.get(arm, arm))
                    s.add(arms[arm])
                cases = {}
                for name in chosen:
                    cases[name] = Case(study_id=study.id, volume_name=name, reference=str(first.at[name, "reference"]))
                    s.add(cases[name])
                s.flush()
                items = []
                arm_rng = db.keyed_rng(study.secret, "arm-order")
                for name in chosen:
                    # Within each case the arms are stored in a secret order, so nothing that follows
                    # storage order (row ids, a sorted list) lines up with the --arms order.
                    case_arms = list(tables)
                    arm_rng.shuffle(case_arms)
                    for arm in case_arms:
                        items.append(Item(study_id=study.id, case_id=cases[name].id, arm_id=arms[arm].id,
                                          code=new_item_code(), text=str(tables[arm].at[name, "generated"])))
                s.add_all(items)
                s.flush()
                item_ids = [i.id for i in items]
                for reader in readers:
                    self._add_reader(s, study, reader, creds.passwords[reader], item_ids)
                s.add(Reader(study_id=study.id, name=ADMIN, role="admin", password_hash=hash_password(creds.admin_password)))
                self._audit(s, study.id, None, "create", detail=json.dumps(
                    {"arms": spec.arm_sources, "cases": len(chosen), "readers": readers, "seed": spec.seed}))
        except IntegrityError:
            raise ConfigError(f"a study named {spec.name!r} already exists", self.path) from None
        return creds

    def _add_reader(self, s, study: Study, name: str, password: str, item_ids: list[int]) -> None:
        reader = Reader(study_id=study.id, name=name, role="reader", password_hash=hash_password(password))
        s.add(reader)
        s.flush()
        s.add_all(Assignment(reader_id=reader.id, item_id=item, position=k)
                  for k, item in enumerate(reader_order(item_ids, study.secret, reader.id), start=1))

    def add_readers(self, study_name: str, names: Iterable[str]) -> dict[str, str]:
        """New readers, each with the whole study in their own order; returns their passwords."""
        out = {}
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            existing = set(s.scalars(select(Reader.name).where(Reader.study_id == study.id)))
            item_ids = list(s.scalars(select(Item.id).where(Item.study_id == study.id)))
            for name in names:
                name = name.strip()
                if not name or name in existing or name == ADMIN:
                    raise ConfigError(f"reader name {name!r} is empty, taken or reserved in study {study_name!r}")
                out[name] = new_password()
                self._add_reader(s, study, name, out[name], item_ids)
                existing.add(name)
                self._audit(s, study.id, None, "add_reader", detail=name)
        return out

    def reset_password(self, study_name: str, name: str) -> str:
        password = new_password()
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            reader = s.scalars(select(Reader).where(Reader.study_id == study.id, Reader.name == name)).first()
            if reader is None:
                raise ConfigError(f"study {study_name!r} has no login {name!r}")
            reader.password_hash = hash_password(password)
            s.execute(LoginSession.__table__.delete().where(LoginSession.reader_id == reader.id))
            self._audit(s, study.id, reader.id, "reset_password")
        return password

    # -- looking up ---------------------------------------------------------------------------------
    def _study(self, s, name: str) -> Study:
        study = s.scalars(select(Study).where(Study.name == name)).first()
        if study is None:
            names = list(s.scalars(select(Study.name)))
            raise ConfigError(f"no study named {name!r} (studies: {', '.join(names) or 'none'})", self.path)
        return study

    def study_names(self) -> list[str]:
        with self.Session.begin() as s:
            return list(s.scalars(select(Study.name).order_by(Study.id)))

    def study_info(self, name: str) -> dict:
        with self.Session.begin() as s:
            study = self._study(s, name)
            return {"name": study.name, "seed": study.seed, "show_reference": study.show_reference,
                    "lock_after_submit": study.lock_after_submit,
                    "data_dir": study.data_dir,
                    "arms": list(s.scalars(select(Arm.name).where(Arm.study_id == study.id).order_by(Arm.id))),
                    "cases": s.scalar(select(func.count()).select_from(Case).where(Case.study_id == study.id)),
                    "items": s.scalar(select(func.count()).select_from(Item).where(Item.study_id == study.id)),
                    "readers": list(s.scalars(select(Reader.name)
                                              .where(Reader.study_id == study.id, Reader.role == "reader")
                                              .order_by(Reader.id)))}

    def study_secret(self, name: str) -> str:
        """The study's secret, for labels that must stay stable and unguessable (the blind export)."""
        with self.ReadSession.begin() as s:
            return self._study(s, name).secret

    # -- logging in ---------------------------------------------------------------------------------
    def login(self, study_name: str, name: str, password: str, *, role: str = "reader", client: str | None = None) -> str:
        """A session token for a reader (or, with role="admin", the admin). `client` (the caller's
        address) adds a per-client backoff to the per-name one. Failures are audited (rate-limited)."""
        if not self.config.guarded_login:
            return self._login_unguarded(study_name, name, password, role)
        study_name, name, password = str(study_name or ""), str(name or "").strip(), str(password or "")
        noise = client or "-"
        if len(study_name) > NAME_MAX or len(name) > NAME_MAX or len(password) > PASSWORD_MAX:
            self._refuse(AccessDenied, "wrong name or password", event="login_failed", noise=noise)
        name_key = f"{study_name}:{role}:{name}"
        wait = self.client_backoff.wait_s(client) if client else 0.0
        if wait <= 0:
            wait = self.backoff.charge([name_key])  # counted as failed until the password proves right
        if wait > 0:
            self._refuse(AccessDenied, f"too many failed logins: try again in {max(1, round(wait))} s",
                         event="login_throttled", noise=noise)
        with self.ReadSession.begin() as s:  # no write lock: a flood of logins never holds up a submission
            study = s.scalars(select(Study).where(Study.name == study_name)).first()
            reader = None if study is None else s.scalars(
                select(Reader).where(Reader.study_id == study.id, Reader.name == name)).first()
            if reader is not None and reader.role != role:
                reader = None
            study_id, reader_id = (study.id if study else None), (reader.id if reader else None)
            stored = reader.password_hash if reader else self._dummy_hash
        with self._hashing:
            # An unknown name is checked against a dummy hash: the same work, so timing names no one.
            ok = check_password(password, stored) and reader is not None
        if not ok:
            if client:
                self.client_backoff.failed(client)
            self._refuse(AccessDenied, "wrong name or password", study_id=study_id, reader_id=reader_id,
                         event="login_failed", noise=noise)
        self.backoff.succeeded(name_key)
        token = secrets.token_urlsafe(24)
        now = db.utcnow()
        with self.Session.begin() as s:
            s.execute(LoginSession.__table__.delete().where(LoginSession.reader_id == reader_id,
                                                            LoginSession.expires_at <= now))
            s.add(LoginSession(token_hash=_token_hash(token), reader_id=reader_id, created_at=now,
                               expires_at=now + timedelta(seconds=self.config.session_ttl_s)))
            self._audit(s, study_id, reader_id, "login", detail=role)
        return token

    def _login_unguarded(self, study_name: str, name: str, password: str, role: str) -> str:
        """The version-1 login, kept only as the benchmark's reference: the password is checked
        inside the write transaction, unknown names cost nothing, nothing is throttled."""
        with self.Session.begin() as s:
            study = s.scalars(select(Study).where(Study.name == study_name)).first()
            reader = None if study is None else s.scalars(
                select(Reader).where(Reader.study_id == study.id, Reader.name == (name or "").strip())).first()
            ok = reader is not None and reader.role == role and check_password(password or "", reader.password_hash)
            if ok:
                token = secrets.token_urlsafe(24)
                now = db.utcnow()
                s.add(LoginSession(token_hash=_token_hash(token), reader_id=reader.id, created_at=now,
                                   expires_at=now + timedelta(seconds=self.config.session_ttl_s)))
                self._audit(s, study.id, reader.id, "login", detail=role)
                return token
            study_id, reader_id = (study.id if study else None), (reader.id if reader else None)
        self._refuse(AccessDenied, "wrong name or password", study_id=study_id, reader_id=reader_id, event="login_failed")
        raise AssertionError("unreachable")

    def logout(self, token: str) -> None:
        """End a session (a later call with the token is refused)."""
        token = str(token or "")[: TOKEN_MAX + 1]
        with self.Session.begin() as s:
            row = s.get(LoginSession, _token_hash(token))
            if row is not None:
                reader = s.get(Reader, row.reader_id)
                s.delete(row)
                self._audit(s, reader.study_id, reader.id, "logout")

    def revoke_sessions(self, study_name: str, reader_name: str | None = None) -> int:
        """End every session of one login of the study (or of all its logins, the admin's included,
        when `reader_name` is None); returns how many were ended."""
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            q = select(Reader.id).where(Reader.study_id == study.id)
            if reader_name is not None:
                q = q.where(Reader.name == reader_name)
                if s.scalars(q).first() is None:
                    raise ConfigError(f"study {study_name!r} has no login {reader_name!r}")
            ended = s.execute(LoginSession.__table__.delete().where(LoginSession.reader_id.in_(q))).rowcount
            self._audit(s, study.id, None, "revoke", detail=f"{reader_name or 'all logins'}: {ended} session(s)")
        return int(ended)

    def admin_revoke(self, token: str, reader_name: str | None = None) -> int:
        """The admin's revoke (from the server's admin page or API); the admin's own session is kept."""
        admin = self._reader_or_refuse(token, role="admin")
        if reader_name is not None and len(str(reader_name)) > NAME_MAX:
            raise ConfigError("reader name is too long")
        with self.Session.begin() as s:
            study = s.get(Study, admin.study_id)
            q = select(Reader.id).where(Reader.study_id == study.id, Reader.role == "reader")
            if reader_name:
                q = q.where(Reader.name == reader_name)
                if s.scalars(q).first() is None:
                    raise ConfigError(f"study {study.name!r} has no reader {reader_name!r}")
            ended = s.execute(LoginSession.__table__.delete().where(LoginSession.reader_id.in_(q))).rowcount
            self._audit(s, study.id, admin.id, "revoke", detail=f"{reader_name or 'all readers'}: {ended} session(s)")
        return int(ended)

    def _reader(self, s, token: str, role: str = "reader") -> Reader:
        token = str(token or "")
        row = None if len(token) > TOKEN_MAX else s.get(LoginSession, _token_hash(token))
        if row is not None and row.expires_at <= db.utcnow():
            raise AccessDenied("your session has expired: please log in again")
        reader = None if row is None else s.get(Reader, row.reader_id)
        if reader is None or reader.role != role:
            raise AccessDenied("not logged in (or the session has ended): please log in again")
        return reader

    def _reader_or_refuse(self, token: str, role: str = "reader") -> Reader:
        try:
            with self.ReadSession.begin() as s:
                return self._reader(s, token, role)
        except AccessDenied as err:
            self._refuse(AccessDenied, err.problem, event="bad_session", noise="session")
            raise

    # -- a reader's queue ---------------------------------------------------------------------------
    def _counts(self, s, reader: Reader) -> tuple[int, int]:
        total = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.reader_id == reader.id))
        rated = s.scalar(select(func.count()).select_from(Rating).where(Rating.reader_id == reader.id))
        return int(total), int(rated)

    def _view(self, s, reader: Reader, assignment: Assignment | None) -> ItemView:
        total, rated = self._counts(s, reader)
        finished = reader.finished_at is not None
        if assignment is None:
            return ItemView(0, total, rated, done=rated >= total, finished=finished)
        item = s.get(Item, assignment.item_id)
        case = s.get(Case, item.case_id)
        study = s.get(Study, item.study_id)
        rating = s.scalars(select(Rating).where(Rating.reader_id == reader.id, Rating.item_id == item.id)).first()
        assignment.viewed_at = db.utcnow()
        self._audit(s, study.id, reader.id, "view", item.code)
        return ItemView(
            position=assignment.position, total=total, rated=rated, done=rated >= total, finished=finished,
            code=item.code, volume_name=case.volume_name, report=item.text,
            reference=case.reference if study.show_reference else None,
            rating=None if rating is None else {
                "clinical": rating.clinical, "technical": rating.technical,
                "criteria": json.loads(rating.criteria), "comment": rating.comment, "revision": rating.revision,
                "locked": finished or (study.lock_after_submit and not rating.unlocked)},
        )

    def _first_unrated(self, s, reader: Reader) -> Assignment | None:
        rated = select(Rating.item_id).where(Rating.reader_id == reader.id)
        return s.scalars(select(Assignment).where(Assignment.reader_id == reader.id, Assignment.item_id.not_in(rated))
                         .order_by(Assignment.position).limit(1)).first()

    def next_item(self, token: str) -> ItemView:
        """The first unrated item of the reader's queue (where a returning reader resumes)."""
        reader = self._reader_or_refuse(token)
        with self.Session.begin() as s:
            reader = s.get(Reader, reader.id)
            return self._view(s, reader, self._first_unrated(s, reader))

    def item_at(self, token: str, position: int) -> ItemView:
        """The item at a place of the reader's queue (to look back at or revise a rating)."""
        reader = self._reader_or_refuse(token)
        try:
            wanted = int(str(position)) if len(str(position)) <= 12 else None
        except ValueError:
            wanted = None
        if wanted is None:
            raise RatingRefused(f"a queue position is a whole number, got {_short(position)}")
        position = wanted
        with self.Session.begin() as s:
            reader = s.get(Reader, reader.id)
            assignment = s.scalars(select(Assignment).where(Assignment.reader_id == reader.id,
                                                            Assignment.position == position)).first()
            if assignment is None:
                total, _ = self._counts(s, reader)
                raise RatingRefused(f"no item at position {position} (your queue has 1..{total})")
            return self._view(s, reader, assignment)

    def submit_rating(self, token: str, code: str, clinical, technical, criteria: Iterable[str] | None = None,
                      comment: str | None = "") -> ItemView:
        """Store (or revise) the reader's rating of item `code` in one transaction and return the next
        unrated item. A resubmission of identical values changes nothing (a retried request)."""
        reader = self._reader_or_refuse(token)
        ids = dict(study_id=reader.study_id, reader_id=reader.id, item_code=str(code)[:CODE_MAX] if code else None)
        if len(str(code or "")) > CODE_MAX:
            self._refuse(RatingRefused, f"no item with code {_short(code)} (codes are at most {CODE_MAX} characters)", **ids)
        scores = {}
        for key, value in (("clinical", clinical), ("technical", technical)):
            label = "clinical accuracy" if key == "clinical" else "technical & linguistic quality"
            if value is None or value == "":
                self._refuse(RatingRefused, f"please give a {label} score (both scores are required)", **ids)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not number.is_integer() or not 1 <= number <= 5:
                self._refuse(RatingRefused, f"{label} score must be a whole number from 1 to 5, got {_short(value)}", **ids)
            scores[key] = int(number)
        if isinstance(criteria, str) or len(list(criteria or [])) > 4 * len(ALL_CRITERIA):
            self._refuse(RatingRefused, "criteria must be a short list of rubric criteria", **ids)
        criteria = sorted({str(c) for c in criteria or []})
        unknown = [c for c in criteria if c not in ALL_CRITERIA]
        if unknown:
            self._refuse(RatingRefused, f"unknown rubric criteria {[_short(c) for c in unknown[:5]]}", **ids)
        comment = str(comment or "").strip()
        if len(comment) > COMMENT_MAX:
            self._refuse(RatingRefused, f"comment is longer than {COMMENT_MAX:,} characters", **ids)

        problem = None
        with self.Session.begin() as s:
            # The reader's row lock (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers)
            # makes one reader's submissions from any server run one at a time: a double click through
            # two sites revises once instead of inserting twice or losing a revision.
            reader = s.get(Reader, reader.id, with_for_update=True)
            item = s.scalars(select(Item).where(Item.code == str(code or ""))).first()
            assignment = None if item is None else s.scalars(
                select(Assignment).where(Assignment.reader_id == reader.id, Assignment.item_id == item.id)).first()
            if item is None:
                problem = f"no item with code {_short(code)}"
            elif assignment is None:
                problem = f"item {code} is not in your queue"
            elif reader.finished_at is not None:
                problem = "you have finished this study; ratings can no longer be changed"
            if problem is None:
                rating = s.scalars(select(Rating).where(Rating.reader_id == reader.id, Rating.item_id == item.id)).first()
                problem = self._store(s, reader, item, assignment, rating, scores, criteria, comment)
            if problem is None:
                s.flush()
                return self._view(s, reader, self._first_unrated(s, reader))
        self._refuse(RatingRefused, problem, **ids)
        raise AssertionError("unreachable")

    def _store(self, s, reader: Reader, item: Item, assignment: Assignment, rating: Rating | None, scores: dict,
               criteria: list[str], comment: str) -> str | None:
        """Insert or revise the rating inside the caller's transaction; the refusal, if any."""
        now = db.utcnow()
        seconds = None if assignment.viewed_at is None else (now - assignment.viewed_at).total_seconds()
        values = dict(clinical=scores["clinical"], technical=scores["technical"],
                      criteria=json.dumps(criteria), comment=comment)
        if rating is None:
            s.add(Rating(reader_id=reader.id, item_id=item.id, seconds_spent=seconds, created_at=now,
                         updated_at=now, revision=1, **values))
            self._audit(s, reader.study_id, reader.id, "submit", item.code,
                        f"clinical={scores['clinical']} technical={scores['technical']}")
            return None
        if all(getattr(rating, k) == v for k, v in values.items()):
            return None  # a retried request: nothing to change, locked or not
        if s.get(Study, reader.study_id).lock_after_submit and not rating.unlocked:
            return f"item {item.code} is locked: a submitted rating cannot be changed (the study lead can unlock it)"
        s.add(RatingRevision(rating_id=rating.id, revision=rating.revision, clinical=rating.clinical,
                             technical=rating.technical, criteria=rating.criteria, comment=rating.comment,
                             saved_at=rating.updated_at))
        for k, v in values.items():
            setattr(rating, k, v)
        rating.revision += 1
        rating.unlocked = False  # an unlock allows one revision
        rating.updated_at = now
        rating.seconds_spent = (rating.seconds_spent or 0.0) + (seconds or 0.0)
        self._audit(s, reader.study_id, reader.id, "revise", item.code,
                    f"revision {rating.revision}: clinical={scores['clinical']} technical={scores['technical']}")
        return None

    def unlock_rating(self, study_name: str, reader_name: str, code: str, *, admin_id: int | None = None) -> None:
        """Allow one revision of a reader's locked rating of item `code` (the study lead's decision)."""
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            reader = s.scalars(select(Reader).where(Reader.study_id == study.id, Reader.role == "reader",
                                                    Reader.name == str(reader_name))).first()
            if reader is None:
                raise ConfigError(f"study {study_name!r} has no reader {_short(reader_name)}")
            rating = s.scalars(select(Rating).join(Item, Rating.item_id == Item.id)
                               .where(Rating.reader_id == reader.id, Item.code == str(code))).first()
            if rating is None:
                raise ConfigError(f"reader {reader.name!r} has no rating of item {_short(code)}")
            rating.unlocked = True
            self._audit(s, study.id, admin_id, "unlock", str(code), f"reader {reader.name}")

    def admin_unlock(self, token: str, reader_name: str, code: str) -> None:
        """The admin's unlock (from the server's admin API)."""
        admin = self._reader_or_refuse(token, role="admin")
        with self.Session.begin() as s:
            name = s.get(Study, admin.study_id).name
        self.unlock_rating(name, reader_name, code, admin_id=admin.id)

    def review(self, token: str) -> list[dict]:
        """The reader's own answers in queue order, read-only: position, item code, scores, criteria,
        comment, revision and whether the rating is locked."""
        reader = self._reader_or_refuse(token)
        with self.Session.begin() as s:
            reader = s.get(Reader, reader.id)
            study = s.get(Study, reader.study_id)
            rows = s.execute(select(Assignment.position, Item.code, Rating)
                             .join(Item, Assignment.item_id == Item.id)
                             .join(Rating, (Rating.item_id == Item.id) & (Rating.reader_id == reader.id))
                             .where(Assignment.reader_id == reader.id).order_by(Assignment.position)).all()
            finished = reader.finished_at is not None
            return [{"position": pos, "code": code, "clinical": r.clinical, "technical": r.technical,
                     "criteria": json.loads(r.criteria), "comment": r.comment, "revision": r.revision,
                     "locked": finished or (study.lock_after_submit and not r.unlocked)} for pos, code, r in rows]

    def finish(self, token: str) -> ItemView:
        """Close the reader's study: allowed once every item is rated; no revisions after."""
        reader = self._reader_or_refuse(token)
        with self.Session.begin() as s:
            reader = s.get(Reader, reader.id, with_for_update=True)
            total, rated = self._counts(s, reader)
            if rated >= total and reader.finished_at is None:
                reader.finished_at = db.utcnow()
                self._audit(s, reader.study_id, reader.id, "finish")
                s.flush()
                return self._view(s, reader, None)
        if rated < total:
            self._refuse(RatingRefused, f"{total - rated} item(s) still unrated; finish when all are scored",
                         study_id=reader.study_id, reader_id=reader.id)
        with self.Session.begin() as s:
            return self._view(s, s.get(Reader, reader.id), None)

    # -- the study lead -----------------------------------------------------------------------------
    def admin_study(self, token: str) -> str:
        """The study name of an admin session (AccessDenied for a reader's session)."""
        admin = self._reader_or_refuse(token, role="admin")
        with self.Session.begin() as s:
            return s.get(Study, admin.study_id).name

    def progress(self, study_name: str) -> pd.DataFrame:
        """Per reader: items, rated, revised, last activity, finished."""
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            rows = []
            readers = select(Reader).where(Reader.study_id == study.id, Reader.role == "reader").order_by(Reader.id)
            for reader in s.scalars(readers):
                total, rated = self._counts(s, reader)
                revised = s.scalar(select(func.count()).select_from(Rating)
                                   .where(Rating.reader_id == reader.id, Rating.revision > 1))
                last = s.scalar(select(func.max(Rating.updated_at)).where(Rating.reader_id == reader.id))
                rows.append({"reader": reader.name, "rated": rated, "items": total,
                             "percent": round(100.0 * rated / total, 1) if total else 0.0,
                             "revised": int(revised), "last_rating": last, "finished": reader.finished_at is not None})
        return pd.DataFrame(rows, columns=["reader", "rated", "items", "percent", "revised", "last_rating", "finished"])

    def ratings_frame(self, study_name: str, *, with_arms: bool = True) -> pd.DataFrame:
        """One row per live rating: reader, case, item code, (arm), scores, criteria, comment,
        timestamps, seconds spent, revision."""
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            q = (select(Reader.name, Case.volume_name, Item.code, Arm.name, Rating)
                 .join(Rating, Rating.reader_id == Reader.id).join(Item, Item.id == Rating.item_id)
                 .join(Case, Case.id == Item.case_id).join(Arm, Arm.id == Item.arm_id)
                 .where(Reader.study_id == study.id).order_by(Reader.id, Rating.created_at, Rating.id))
            rows = []
            for reader, case, code, arm, r in s.execute(q):
                crit = json.loads(r.criteria)
                row = {"reader": reader, "case": case, "item_code": code, "arm": arm,
                       "clinical": r.clinical, "technical": r.technical, "criteria": ";".join(crit)}
                row.update({f"criterion_{k}": k in crit for k in ALL_CRITERIA})
                row.update({"comment": r.comment, "created_at": r.created_at, "updated_at": r.updated_at,
                            "seconds_spent": r.seconds_spent, "revision": r.revision})
                rows.append(row)
        columns = ["reader", "case", "item_code", "arm", "clinical", "technical", "criteria",
                   *[f"criterion_{k}" for k in ALL_CRITERIA], "comment", "created_at", "updated_at",
                   "seconds_spent", "revision"]
        df = pd.DataFrame(rows, columns=columns)
        return df if with_arms else df.drop(columns=["arm"])

    def audit_frame(self, study_name: str | None = None) -> pd.DataFrame:
        with self.Session.begin() as s:
            q = select(AuditEvent.at, AuditEvent.event, Reader.name, AuditEvent.item_code, AuditEvent.detail).outerjoin(
                Reader, Reader.id == AuditEvent.reader_id).order_by(AuditEvent.id)
            if study_name is not None:
                study = self._study(s, study_name)
                q = q.where((AuditEvent.study_id == study.id) | (AuditEvent.study_id.is_(None)))
            rows = [tuple(r) for r in s.execute(q)]
        return pd.DataFrame(rows, columns=["at", "event", "reader", "item_code", "detail"])

    def revisions_frame(self, study_name: str) -> pd.DataFrame:
        with self.Session.begin() as s:
            study = self._study(s, study_name)
            q = (select(Reader.name, Item.code, RatingRevision.revision, RatingRevision.clinical,
                        RatingRevision.technical, RatingRevision.criteria, RatingRevision.comment, RatingRevision.saved_at)
                 .join(Rating, Rating.id == RatingRevision.rating_id).join(Reader, Reader.id == Rating.reader_id)
                 .join(Item, Item.id == Rating.item_id).where(Reader.study_id == study.id).order_by(RatingRevision.id))
            rows = [tuple(r) for r in s.execute(q)]
        return pd.DataFrame(rows, columns=["reader", "item_code", "revision", "clinical", "technical", "criteria",
                                           "comment", "saved_at"])


SCALE_LABELS = SCALE  # re-exported for the UI
