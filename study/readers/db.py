"""Reader-study storage: SQLAlchemy models on one SQLite file, or on a PostgreSQL database that
several servers (sites) share.

A SQLite file runs in WAL mode with foreign keys on, and every transaction starts with
`BEGIN IMMEDIATE`, so concurrent submissions queue for the write lock (busy_timeout) instead of
failing half-way. The schema's version is recorded in `schema_version`; opening an older file runs
the migrations in MIGRATIONS in order, opening a newer one is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from engine.errors import ConfigError

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10  # an unreachable PostgreSQL host is reported after this, not the OS's minutes
SCHEMA_LOCK_KEY = 0x72616433  # "rad3", the advisory lock held while a PostgreSQL schema is made or migrated
READ_ONLY = "rad3d_read_only"  # execution option: begin with a plain (deferred) BEGIN, no write lock


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)  # picks the cases, nothing else
    # 32 random bytes (hex) from `secrets`, made at create: keys every part of the blind (queue and
    # arm order, the blind export's arm and reader labels). Never shown to readers nor exported.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    show_reference: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # A submitted rating cannot be revised by its reader (the study lead can unlock one rating).
    lock_after_submit: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    data_dir: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Arm(Base):
    """A source of reports (a predictions file or a run); readers never see its name."""

    __tablename__ = "arms"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("study_id", "volume_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    volume_name: Mapped[str] = mapped_column(String(400), nullable=False)
    reference: Mapped[str] = mapped_column(Text, nullable=False)


class Item(Base):
    """One case × one arm's report, shown under an opaque code."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("case_id", "arm_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), nullable=False)
    arm_id: Mapped[int] = mapped_column(ForeignKey("arms.id", ondelete="CASCADE"), nullable=False)
    code: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class Reader(Base):
    """A login of a study: a reader (role "reader") or the study's admin (role "admin")."""

    __tablename__ = "readers"
    __table_args__ = (UniqueConstraint("study_id", "name"), CheckConstraint("role IN ('reader', 'admin')"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(10), nullable=False, default="reader")
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class LoginSession(Base):
    """A logged-in browser; only a hash of its token is stored, and it outlives server restarts."""

    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("readers.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Assignment(Base):
    """An item in a reader's queue at a position (1-based, per-reader seeded order)."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("reader_id", "item_id"), UniqueConstraint("reader_id", "position"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("readers.id", ondelete="CASCADE"), nullable=False)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    viewed_at: Mapped[datetime | None] = mapped_column(DateTime)  # last time it was shown


class Rating(Base):
    """The live rating of one item by one reader (one row at most, by the unique constraint);
    earlier versions are kept in rating_revisions."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("reader_id", "item_id"),
        CheckConstraint("clinical BETWEEN 1 AND 5"),
        CheckConstraint("technical BETWEEN 1 AND 5"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("readers.id", ondelete="CASCADE"), nullable=False)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False)
    clinical: Mapped[int] = mapped_column(Integer, nullable=False)
    technical: Mapped[int] = mapped_column(Integer, nullable=False)
    criteria: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list of criterion keys
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    unlocked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # one revision allowed by the lead
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class AnswerKey(Base):
    """The study lead's reference grades of one item (loaded from a CSV); readers never see them."""

    __tablename__ = "answer_key"
    __table_args__ = (CheckConstraint("clinical BETWEEN 1 AND 5"), CheckConstraint("technical BETWEEN 1 AND 5"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    clinical: Mapped[int] = mapped_column(Integer, nullable=False)
    technical: Mapped[int] = mapped_column(Integer, nullable=False)


class RatingRevision(Base):
    """A superseded version of a rating, written when the reader revises it."""

    __tablename__ = "rating_revisions"
    __table_args__ = (UniqueConstraint("rating_id", "revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id", ondelete="CASCADE"), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    clinical: Mapped[int] = mapped_column(Integer, nullable=False)
    technical: Mapped[int] = mapped_column(Integer, nullable=False)
    criteria: Mapped[str] = mapped_column(Text, nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False)
    saved_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class AuditEvent(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("readers.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40), nullable=False)  # login, login_failed, view, submit, revise, refused, finish
    item_code: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")  # a submitted rating survives a killed process
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Take the write lock up front: a deferred transaction that reads then writes can fail
        # with "database is locked" when another writer got in between. Read-only work (a login's
        # lookup) begins deferred: under WAL it never waits for, nor holds up, a writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def database_url(spec: str | Path) -> URL:
    """The SQLAlchemy URL of `--db`: a URL as given (postgresql:// runs on psycopg 3), anything else
    a path to a SQLite file."""
    text_spec = str(spec)
    if "://" not in text_spec:
        return URL.create("sqlite", database=str(Path(text_spec)))
    try:
        url = make_url(text_spec)
    except ArgumentError:
        raise ConfigError("not a database URL (postgresql://USER@HOST:PORT/DBNAME) nor a SQLite path",
                          _hide_password(text_spec)) from None
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        return url
    raise ConfigError(f"study databases are SQLite files or PostgreSQL URLs, not {url.get_backend_name()}",
                      url.render_as_string(hide_password=True))


def _hide_password(spec: str) -> str:
    """A URL that did not parse, printed without anything between ':' and '@' of its netloc."""
    head, sep, rest = spec.partition("://")
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return head + sep + (user + at + host if at else netloc) + slash + tail


def display_name(spec: str | Path) -> str:
    """What messages call the database: the SQLite path, or the URL with its password hidden."""
    url = database_url(spec)
    return str(url.database) if url.get_backend_name() == "sqlite" else make_url(str(spec)).render_as_string(hide_password=True)


def open_engine(spec: str | Path, *, create: bool = True) -> Engine:
    """Engine on the study database `spec` (a SQLite path or a PostgreSQL URL), created with the
    current schema if it has none and `create`, migrated if older. Raises ConfigError for a missing
    file or an empty database (unless `create`), an unreachable server, or a database that is not
    a healthy study database."""
    url = database_url(spec)
    if url.get_backend_name() == "postgresql":
        return _open_postgres(url, create)
    path = Path(url.database or "")
    if path.exists() and path.is_dir():
        raise ConfigError("study database path is a directory", path)
    if not path.exists():
        if not create:
            raise ConfigError("no study database here (make one with `rad3d study create`)", path)
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})
    _configure_sqlite(engine)
    try:
        _ensure_schema(engine, path, create)
    except ConfigError:
        engine.dispose()
        raise
    except Exception as err:  # sqlite3.DatabaseError: "file is not a database" and the like
        engine.dispose()
        raise ConfigError(f"not a usable study database ({str(err).splitlines()[0]})", path) from None
    return engine


def _open_postgres(url: URL, create: bool) -> Engine:
    """PostgreSQL at READ COMMITTED (its default): the service locks the reader's row before it
    writes that reader's answers (SELECT ... FOR UPDATE), so one reader's submissions from any
    site run one at a time while different readers never wait for each other; the unique
    constraints refuse whatever would slip past."""
    shown = url.set(drivername="postgresql").render_as_string(hide_password=True)
    engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except OperationalError as err:
        engine.dispose()
        reason = " ".join(str(err.orig or err).split())[:300]
        raise ConfigError(f"cannot reach the study database at {url.host or 'localhost'}:{url.port or 5432} ({reason})",
                          shown) from None
    try:
        _ensure_schema(engine, shown, create)
    except ConfigError:
        engine.dispose()
        raise
    except DBAPIError as err:
        engine.dispose()
        raise ConfigError(f"not a usable study database ({str(err.orig or err).splitlines()[0]})", shown) from None
    return engine


def _ensure_schema(engine: Engine, where: str | Path, create: bool = True) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # A damaged file can open and list its tables yet fail on the first real query; a quick
            # check (milliseconds on a study-sized file) turns that into one clear refusal up front.
            problems = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise ConfigError(f"study database is damaged (sqlite quick_check: {problems[0][:200]})", where)
        else:
            # Two sites starting at once: the first creates or migrates, the second then finds it done.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        if not tables and not create and conn.dialect.name != "sqlite":
            raise ConfigError("no study tables in this database (make a study with `rad3d study create`)", where)
        if "schema_version" not in tables and tables:
            raise ConfigError("database holds other tables and no rad3d schema_version", where)
        if "schema_version" not in tables:
            Base.metadata.create_all(conn)
            conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            return
        version = conn.execute(select(SchemaVersion.version).where(SchemaVersion.id == 1)).scalar_one()
        if version > SCHEMA_VERSION:
            raise ConfigError(f"study database has schema version {version}, newer than this rad3d's {SCHEMA_VERSION}", where)
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise ConfigError(f"no migration from study database schema version {version}", where)
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(SchemaVersion.__table__.update().where(SchemaVersion.id == 1).values(version=version))


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker:
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}) if read_only else engine, expire_on_commit=False)


def new_secret() -> str:
    return secrets.token_hex(32)


def keyed_rng(secret: str, purpose: str) -> random.Random:
    """A shuffler keyed by a study's secret: HMAC-SHA256(secret, purpose) seeds it, so an order is
    reproducible by whoever holds the database and unpredictable to anyone who does not (the
    public code, the study seed and reader names do not determine it)."""
    key = hmac.new(bytes.fromhex(secret), purpose.encode(), hashlib.sha256).digest()
    return random.Random(int.from_bytes(key, "big"))


# -- migrations ---------------------------------------------------------------------------------------
def _v1_to_v2(conn: Connection) -> None:
    """Version 2: a per-study secret keys the blind; sessions expire.

    Version-1 queues were shuffled by `f"{seed}:{reader}"` (recoverable from the public code), so
    every reader's queue is reshuffled with the new secret: ratings belong to items, not positions,
    so nothing is lost; a reader resumes at their first unrated item in the new order. Version-1
    sessions had no expiry and are ended (readers log in again)."""
    conn.execute(text("ALTER TABLE studies ADD COLUMN secret VARCHAR(64) NOT NULL DEFAULT ''"))
    conn.execute(text("DROP TABLE login_sessions"))
    LoginSession.__table__.create(conn)
    for (study_id,) in conn.execute(text("SELECT id FROM studies")).fetchall():
        secret = new_secret()
        conn.execute(text("UPDATE studies SET secret = :s WHERE id = :i"), {"s": secret, "i": study_id})
        readers = conn.execute(text("SELECT id FROM readers WHERE study_id = :i AND role = 'reader'"), {"i": study_id})
        for (reader_id,) in readers.fetchall():
            rows = conn.execute(text("SELECT id FROM assignments WHERE reader_id = :r ORDER BY id"), {"r": reader_id})
            ids = [r[0] for r in rows.fetchall()]
            keyed_rng(secret, f"migrate-queue:{reader_id}").shuffle(ids)
            # Two passes keep UNIQUE(reader_id, position) true after every statement.
            conn.execute(text("UPDATE assignments SET position = -position WHERE reader_id = :r"), {"r": reader_id})
            for position, assignment_id in enumerate(ids, start=1):
                conn.execute(text("UPDATE assignments SET position = :p WHERE id = :i"), {"p": position, "i": assignment_id})
        conn.execute(text("INSERT INTO audit_log (study_id, event, detail, at) VALUES (:i, 'migrate', :d, :t)"),
                     {"i": study_id, "d": "schema 2: secret blind, queues reshuffled, sessions ended", "t": utcnow()})


def _v2_to_v3(conn: Connection) -> None:
    """Version 3: answer locking and the answer key. Studies made before it keep the rule they were
    run under (revisable until Finish); a new study locks after submit unless made with --revisable."""
    AnswerKey.__table__.create(conn, checkfirst=True)
    conn.execute(text("ALTER TABLE studies ADD COLUMN lock_after_submit BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(text("ALTER TABLE ratings ADD COLUMN unlocked BOOLEAN NOT NULL DEFAULT FALSE"))
    for (study_id,) in conn.execute(text("SELECT id FROM studies")).fetchall():
        conn.execute(text("INSERT INTO audit_log (study_id, event, detail, at) VALUES (:i, 'migrate', :d, :t)"),
                     {"i": study_id, "d": "schema 3: answer locking (off for this earlier study)", "t": utcnow()})


# version n → callable migrating a connection from n to n + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}
