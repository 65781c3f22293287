"""Another reader's submissions during a login flood (issue #15): the guarded login (password
checked outside the write lock, dummy hash for unknown names, backoff per name and per client)
against the version-1 login (checked inside the write transaction, no throttle), in one run.

    python3 bench/login_flood.py                 # 200 wrong passwords in 20 s from 4 threads
    python3 bench/login_flood.py --seconds 5     # quicker

Drives the service layer from threads, as the server's worker threads do (the HTTP layer adds the
same cost to both modes). Prints bob's submit latency (p50, p95, max) while the flood runs, how
many attempts were hashed, and the login time of a known and an unknown name. Target: p95 < 0.2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from study.readers import service as service_module  # noqa: E402
from study.readers.service import AccessDenied, ReaderStudyService, ServiceConfig, StudySpec  # noqa: E402
from study.readers.throttle import BackoffConfig  # noqa: E402

ARMS = ("baseline", "v2", "v3")


def make_study(folder: Path, config: ServiceConfig, cases: int = 100):
    names = [f"case_{i:03d}.nii.gz" for i in range(cases)]
    arms = {a: pd.DataFrame({"VolumeName": names, "reference": "Normal chest.", "generated": f"Report {a}."}) for a in ARMS}
    service = ReaderStudyService(folder / "study.sqlite", config=config)
    creds = service.create_study(StudySpec(name="flood", arms=arms, arm_sources={a: a for a in ARMS},
                                           readers=["alice", "bob"], cases=cases, seed=0))
    return service, creds


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_flood(config: ServiceConfig, attempts: int, seconds: float, threads: int, think_s: float) -> dict:
    hashed = []
    real_check = service_module.check_password

    def counting_check(password, stored):
        hashed.append(1)
        return real_check(password, stored)

    service_module.check_password = counting_check
    try:
        with tempfile.TemporaryDirectory() as tmp:
            service, creds = make_study(Path(tmp), config)
            bob = service.login("flood", "bob", creds.passwords["bob"], client="192.0.2.10")
            hashed.clear()
            stop = threading.Event()
            latencies: list[float] = []
            refused = {"throttled": 0, "wrong": 0}

            def score():
                view = service.next_item(bob)
                while not stop.is_set() and not view.done:
                    start = time.perf_counter()
                    view = service.submit_rating(bob, view.code, 3, 4, [], "ok")
                    latencies.append(time.perf_counter() - start)
                    time.sleep(think_s)

            def flood(k: int):
                per_thread = attempts // threads
                gap = seconds / max(1, per_thread)
                for i in range(per_thread):
                    due = time.perf_counter() + gap
                    try:
                        service.login("flood", "alice", f"guess-{k}-{i}", client="198.51.100.7")
                    except AccessDenied as err:
                        refused["throttled" if "too many" in err.problem else "wrong"] += 1
                    time.sleep(max(0.0, due - time.perf_counter()))

            scorer = threading.Thread(target=score)
            scorer.start()
            start = time.perf_counter()
            flooders = [threading.Thread(target=flood, args=(k,)) for k in range(threads)]
            for t in flooders:
                t.start()
            for t in flooders:
                t.join()
            wall = time.perf_counter() - start
            stop.set()
            scorer.join()
            service.close()
    finally:
        service_module.check_password = real_check
    return {"submits": len(latencies), "p50": statistics.median(latencies), "p95": quantile(latencies, 0.95),
            "max": max(latencies), "hashed": len(hashed), "wall": wall, **refused}


def name_timing(config: ServiceConfig, repeats: int = 7) -> tuple[float, float]:
    """Median seconds of a failed login for a known and for an unknown name."""
    with tempfile.TemporaryDirectory() as tmp:
        service, _ = make_study(Path(tmp), config, cases=2)
        times = {"alice": [], "nobody": []}
        for _ in range(repeats):
            for name in times:
                start = time.perf_counter()
                try:
                    service.login("flood", name, "guess")
                except AccessDenied:
                    pass
                times[name].append(time.perf_counter() - start)
        service.close()
    return statistics.median(times["alice"]), statistics.median(times["nobody"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attempts", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0, help="the flood is spread over this long")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--think", type=float, default=0.05, help="bob's pause between submissions (s)")
    args = p.parse_args()
    import os
    import platform

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; flood: {args.attempts} wrong passwords for one "
          f"reader from one client in {args.seconds:g} s ({args.threads} threads); bob submits every {args.think} s")
    modes = {"version 1 (hash in write lock, no throttle)": ServiceConfig(guarded_login=False),
             "guarded (this version)": ServiceConfig()}
    print("\n| login | bob submits | p50 s | p95 s | max s | attempts hashed | refused: wrong / throttled | flood wall s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    results = {}
    for label, config in modes.items():
        r = results[label] = run_flood(config, args.attempts, args.seconds, args.threads, args.think)
        print(f"| {label} | {r['submits']} | {r['p50']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | {r['hashed']} | "
              f"{r['wrong']} / {r['throttled']} | {r['wall']:.1f} |", flush=True)
    print("\n| login | known name, wrong password (median s) | unknown name (median s) | ratio |")
    print("|---|--:|--:|--:|")
    for label, config in (("version 1", ServiceConfig(guarded_login=False)),
                          ("guarded", ServiceConfig(backoff=BackoffConfig(free_failures=1000)))):
        known, unknown = name_timing(config)
        print(f"| {label} | {known:.3f} | {unknown:.3f} | {known / unknown:.2f} |")
    p95 = results["guarded (this version)"]["p95"]
    print(f"\nguarded p95 {p95:.3f} s: target < 0.2 s {'met' if p95 < 0.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
