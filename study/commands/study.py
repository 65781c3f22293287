"""`rad3d study create|summary|export|readers`: the blinded reader study from the command line. The `serve`
action starts the UI's scoring server, so the UI adds it (ui/commands/study_serve.py) through `study_actions`."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments

DEFAULT_DB = "rad3d-studies.sqlite"


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="blinded reader study: create, serve, summarize, export",
                              description="A blinded reader study of generated reports (the paper's rubric: clinical "
                                          "accuracy and technical & linguistic quality, 1-5 each).")
    sub = p.add_subparsers(dest="study_command", metavar="ACTION")
    p.rad3d_actions = sub  # for study_actions

    c = sub.add_parser("create", help="create a study from `rad3d evaluate` predictions and print the logins")
    add_study_arguments(c)
    c.add_argument("--arms", nargs="+", required=True, metavar="NAME=PREDICTIONS.csv",
                   help="one predictions CSV per arm (e.g. baseline=a.csv v2=b.csv v3=c.csv)")
    add_data_arguments(c, required=False, help="dataset folder (flat layout or CT-RATE's released tree): cases must "
                       "have a volume there; the viewer shows it")
    c.add_argument("--cases", type=int, default=100, help="cases to sample (default 100)")
    c.add_argument("--seed", type=int, default=0,
                   help="seed of the case sample only (queue order, arm order and codes come from a per-study secret)")
    c.add_argument("--readers", required=True, help="comma-separated reader names")
    c.add_argument("--stratify", action="store_true", help="sample cases stratified by finding (needs --data with labels)")
    c.add_argument("--show-reference", action="store_true", help="show readers the reference report beside each draft")
    c.add_argument("--revisable", action="store_true",
                   help="let readers revise a submitted rating until Finish (default: locked after submit)")
    c.set_defaults(handler=create)

    s = sub.add_parser("summary", help="per-arm means with 95%% bootstrap intervals, tests and agreement")
    add_study_arguments(s)
    s.add_argument("--reference-arm", help="arm the percentage changes are measured against (default: first by name)")
    s.add_argument("--resamples", type=int, default=2000)
    s.add_argument("--plot", help="also write box plots to this .html file")
    s.set_defaults(handler=summary)

    e = sub.add_parser("export", help="write ratings (+ summary and agreement sheets) to .xlsx or .csv")
    add_study_arguments(e)
    e.add_argument("--out", required=True, help="FILE.xlsx or FILE.csv")
    e.add_argument("--blind", action="store_true",
                   help="leave arm and reader identities out: arms and readers become 'arm 1', 'reader 1', ... and "
                        "rating times are dropped (for sharing, e.g. with the readers)")
    e.add_argument("--with-readers", action="store_true", help="with --blind: keep reader names and rating times")
    e.add_argument("--reference-arm")
    e.add_argument("--resamples", type=int, default=2000)
    e.set_defaults(handler=export)

    k = sub.add_parser("key", help="load the answer key (reference grades per item) from a CSV")
    add_study_arguments(k)
    k.add_argument("--csv", required=True, help="CSV with columns item_code, clinical, technical (1-5 each)")
    k.set_defaults(handler=answer_key)

    r = sub.add_parser("readers", help="list readers and their progress, add readers, or reset a password")
    add_study_arguments(r)
    r.add_argument("--add", help="comma-separated new reader names (each gets the whole study in their own order)")
    r.add_argument("--reset-password", metavar="READER", help="issue a new password for READER (or 'admin')")
    r.add_argument("--revoke", metavar="READER", help="end every session of READER ('all': of every login) now")
    r.add_argument("--unlock", metavar="READER:ITEM",
                   help="allow READER one revision of their locked rating of item code ITEM")
    r.set_defaults(handler=readers)

    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """--db and --name, which every action takes."""
    parser.add_argument("--db", default=DEFAULT_DB, help="study database: a SQLite file, or a PostgreSQL URL "
                        f"(postgresql://USER@HOST:PORT/DBNAME) that several sites share (default {DEFAULT_DB})")
    parser.add_argument("--name", required=True, help="study name")


def study_actions(subparsers) -> argparse._SubParsersAction:
    """The ACTION subparsers of `rad3d study` (after `register`), where another part adds its action."""
    return subparsers.choices["study"].rad3d_actions


def _parse_arms(specs: list[str]) -> dict[str, str]:
    from engine.errors import ConfigError

    arms = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--arms takes NAME=PREDICTIONS.csv, got {spec!r}")
        if name in arms:
            raise ConfigError(f"arm {name!r} given twice")
        arms[name] = path
    return arms


def _strata(dataset, names: set[str]) -> dict[str, str]:
    """Each case's rarest labelled finding among the candidates ("normal" without one)."""
    import numpy as np

    cases = [dataset.case(n) for n in sorted(names)]
    if not cases or cases[0].labels is None:
        from engine.errors import DatasetError

        raise DatasetError("--stratify needs a labels CSV in the dataset", dataset.root)
    labels = np.stack([c.labels for c in cases])
    counts = labels.sum(axis=0)
    out = {}
    for case, row in zip(cases, labels):
        present = np.flatnonzero(row)
        out[case.volume_name] = "normal" if present.size == 0 else dataset.label_set.names[present[np.argmin(counts[present])]]
    return out


def _open(args: argparse.Namespace, **kw):
    """The study database of an existing study: a missing path is refused, never created."""
    from study.readers.service import ReaderStudyService

    return ReaderStudyService(args.db, create=False, **kw)


def database_errors(handler):
    """A damaged database found mid-command (after open's quick check) ends in one line, not a traceback."""
    import functools

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import DatabaseError

        from engine.errors import ConfigError

        try:
            return handler(args)
        except DatabaseError as err:
            from study.readers.db import display_name

            reason = str(err.orig or err).splitlines()[0]  # a PostgreSQL server gone mid-command lands here too
            raise ConfigError(f"study database cannot be read ({reason})", display_name(args.db)) from None

    return wrapped


def create(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from engine.errors import ConfigError
    from study.predictions import read_predictions
    from study.readers.service import ReaderStudyService, StudySpec

    arm_paths = _parse_arms(args.arms)
    tables = {}
    for arm, path in arm_paths.items():
        if Path(path).is_dir():
            raise ConfigError(f"arm {arm}: a run directory; run `rad3d evaluate --run {path} ...` first "
                              "and give its predictions CSV", path)
        tables[arm] = read_predictions(path)
    restrict = strata = None
    source = source_from_args(args)
    if source is not None:
        from engine.data import resolve

        dataset = resolve(source, section=None)
        restrict = {c.volume_name for c in dataset.cases}
        if args.stratify:
            common = set.intersection(*(set(t["VolumeName"]) for t in tables.values())) & restrict
            strata = _strata(dataset, common)
    elif args.stratify:
        raise ConfigError("--stratify needs --data (the labels say which findings a case has)")
    service = ReaderStudyService(args.db)
    creds = service.create_study(StudySpec(
        name=args.name, arms=tables, arm_sources={a: str(Path(p).resolve()) for a, p in arm_paths.items()},
        readers=args.readers.split(","), cases=args.cases, seed=args.seed, show_reference=args.show_reference,
        lock_after_submit=not args.revisable,
        data_dir=source.absolute().dumps() if source else None, strata=strata, restrict_to=restrict))  # DataSource as JSON
    info = service.study_info(args.name)
    print(f"study {args.name!r}: {info['cases']} cases x {len(info['arms'])} arms = {info['items']} items per reader; "
          f"database {service.path}")
    print("Logins (shown once; only salted hashes are stored):")
    for reader, password in creds.passwords.items():
        print(f"  reader {reader:16s} password {password}")
    print(f"  admin  {'admin':16s} password {creds.admin_password}")
    return 0


@database_errors
def summary(args: argparse.Namespace) -> int:
    from study.readers.answer_key import key_frame
    from study.readers.stats import format_summary, score_figure, summarize

    service = _open(args)
    ratings = service.ratings_frame(args.name)
    print(service.progress(args.name).to_string(index=False))
    result = summarize(ratings, args.reference_arm, resamples=args.resamples, key=key_frame(service, args.name))
    print(format_summary(result))
    if args.plot and not ratings.empty:
        score_figure(ratings).write_html(args.plot, include_plotlyjs=True)
        print(f"plots written to {args.plot}")
    return 0


@database_errors
def export(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from study.readers.export import export_study

    if args.with_readers and not args.blind:
        raise ConfigError("--with-readers goes with --blind (the full export always names readers)")
    service = _open(args)
    n = export_study(service, args.name, args.out, admin=not args.blind, with_readers=args.with_readers,
                     reference_arm=args.reference_arm, resamples=args.resamples)
    blinded = " (arms blinded)" if args.with_readers else " (arms and readers blinded)"
    print(f"{n} ratings written to {args.out}" + (blinded if args.blind else ""))
    return 0


@database_errors
@database_errors
def answer_key(args: argparse.Namespace) -> int:
    from study.readers.answer_key import load_answer_key

    print(f"answer key: {load_answer_key(_open(args), args.name, args.csv)} item(s) keyed in study {args.name!r}")
    return 0


def readers(args: argparse.Namespace) -> int:
    service = _open(args)
    if args.add:
        for name, password in service.add_readers(args.name, args.add.split(",")).items():
            print(f"  reader {name:16s} password {password}")
    if args.reset_password:
        print(f"  {args.reset_password:16s} new password {service.reset_password(args.name, args.reset_password)}")
    if args.revoke:
        who = None if args.revoke == "all" else args.revoke
        print(f"  {service.revoke_sessions(args.name, who)} session(s) of {args.revoke} ended")
    if args.unlock:
        from engine.errors import ConfigError

        reader, _, code = args.unlock.partition(":")
        if not reader or not code:
            raise ConfigError(f"--unlock takes READER:ITEM (an item code), got {args.unlock!r}")
        service.unlock_rating(args.name, reader, code)
        print(f"  {reader}'s rating of {code} unlocked for one revision")
    print(service.progress(args.name).to_string(index=False))
    return 0
