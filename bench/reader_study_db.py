"""The reader study's two storage backends under the same load (issue #21), in one run: SQLite (one
file) and PostgreSQL (a throwaway server started here, as the tests do), each with two sites (two
services, each its own engine and connection pool, as two `rad3d study serve` processes have) on the
one database.

    python3 bench/reader_study_db.py                      # 20 readers x 30 items, 2 sites
    python3 bench/reader_study_db.py --readers 8 --cases 4

Each reader thread answers its whole queue, alternating sites, and sends every fifth answer through
both sites at the same moment (a double click reaching two servers). Prints per backend: answers
submitted, ratings kept, lost (an answer with no live rating or other values), doubled (more than one
live rating per reader and item, or more submit events than ratings), and the submit latency
(p50, p95, max) the readers saw.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server the tests use

import pandas as pd  # noqa: E402

from postgres_fixtures import PostgresServer, postgres_bin  # noqa: E402
from study.readers.service import ReaderStudyService, StudySpec  # noqa: E402

ARMS = ("baseline", "v2", "v3")


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(db_spec: str, readers: int, cases: int) -> dict:
    names = [f"case_{i:03d}.nii.gz" for i in range(cases)]
    arms = {a: pd.DataFrame({"VolumeName": names, "reference": "Normal chest.", "generated": f"Report {a}."}) for a in ARMS}
    reader_names = [f"r{i:02d}" for i in range(readers)]
    sites = [ReaderStudyService(db_spec)]
    creds = sites[0].create_study(StudySpec(name="bench", arms=arms, arm_sources={a: a for a in ARMS},
                                            readers=reader_names, cases=cases, seed=0))
    sites.append(ReaderStudyService(db_spec, create=False))
    latencies: list[float] = []
    sent: dict[tuple[str, str], tuple[int, int]] = {}
    lock = threading.Lock()

    def submit(site: int, token: str, code: str, scores: tuple[int, int]) -> None:
        start = time.perf_counter()
        sites[site].submit_rating(token, code, *scores)
        with lock:
            latencies.append(time.perf_counter() - start)

    def reader(name: str) -> None:
        tokens = [s.login("bench", name, creds.passwords[name]) for s in sites]
        view = sites[0].next_item(tokens[0])
        k = 0
        with ThreadPoolExecutor(2) as both:
            while not view.done:
                scores = (1 + k % 5, 1 + (k + len(name)) % 5)
                sent[(name, view.code)] = scores
                if k % 5 == 4:  # the same answer through both sites at once
                    list(both.map(lambda i, c=view.code, sc=scores: submit(i, tokens[i], c, sc), (0, 1)))
                else:
                    submit(k % 2, tokens[k % 2], view.code, scores)
                k += 1
                view = sites[k % 2].next_item(tokens[k % 2])

    start = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        for f in [pool.submit(reader, n) for n in reader_names]:
            f.result()
    wall = time.perf_counter() - start
    ratings = sites[1].ratings_frame("bench")
    kept = {(r, c): (cl, te) for r, c, cl, te in zip(ratings["reader"], ratings["item_code"], ratings["clinical"],
                                                      ratings["technical"])}
    submits = int((sites[0].audit_frame("bench")["event"] == "submit").sum())
    for s in sites:
        s.close()
    return {"answers": len(sent), "calls": len(latencies), "kept": len(ratings),
            "lost": sum(kept.get(key) != value for key, value in sent.items()),
            "doubled": int(ratings.duplicated(["reader", "item_code"]).sum()) + max(0, submits - len(ratings)),
            "p50_ms": 1000 * quantile(latencies, 0.5), "p95_ms": 1000 * quantile(latencies, 0.95),
            "max_ms": 1000 * max(latencies), "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--cases", type=int, default=10, help="cases per study (x 3 arms = items per reader)")
    args = parser.parse_args()
    bindir = postgres_bin()
    if bindir is None:
        print("PostgreSQL's initdb/pg_ctl not found: install Debian's postgresql", file=sys.stderr)
        return 1
    print(f"{args.readers} readers x {args.cases * len(ARMS)} items, 2 sites on one database, every 5th answer "
          "sent through both sites at once")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["sqlite"] = run(str(Path(tmp) / "study.sqlite"), args.readers, args.cases)
    server = PostgresServer(bindir, durable=True)  # fsync and synchronous_commit on
    server.start()
    try:
        rows["postgresql"] = run(server.new_database(), args.readers, args.cases)
    finally:
        server.stop()
    print("| backend | answers | submit calls | kept | lost | doubled | p50 ms | p95 ms | max ms | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['answers']} | {r['calls']} | {r['kept']} | {r['lost']} | {r['doubled']} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['max_ms']:.0f} | {r['wall_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
