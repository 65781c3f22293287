"""METEOR 1.5 through pycocoevalcap's jar (same flags: `-l en -norm`), kept open for one
evaluation: one `SCORE` per case gives that case's 23 sufficient statistics, and one `EVAL` line
per bootstrap resample turns summed statistics into the jar's own corpus aggregate.

The jar's aggregate skips the fragmentation chunks of perfectly matched segments; `aggregable`
applies that rule per case so that plain sums of the adjusted rows reproduce it exactly.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from engine.errors import ConfigError

STATS_LENGTH = 23
METEOR_STAT_COLUMNS = [f"meteor_s{i:02d}" for i in range(STATS_LENGTH)]
_CHUNKS = 20


def meteor_jar() -> Path:
    import pycocoevalcap.meteor.meteor as pycoco_meteor

    return Path(pycoco_meteor.__file__).with_name(pycoco_meteor.METEOR_JAR)


class MeteorJar:
    """A running METEOR process. Use as a context manager; startup takes a few seconds."""

    def __init__(self):
        java = shutil.which("java")
        if java is None:
            raise ConfigError("METEOR needs Java (java not found on PATH); install a JRE or pass --no-meteor")
        jar = meteor_jar()
        self._proc = subprocess.Popen(
            [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1,
        )

    def __enter__(self) -> MeteorJar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def _ask(self, line: str, answers: int) -> list[str]:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        out = [self._proc.stdout.readline().strip() for _ in range(answers)]
        if any(not o for o in out):
            raise ConfigError(f"METEOR jar stopped answering ({meteor_jar()})")
        return out

    def case_stats(self, hypotheses: list[str], references: list[str]) -> np.ndarray:
        """(n, 23) raw statistics, one row per case (single reference each)."""
        rows = []
        for hyp, ref in zip(hypotheses, references):
            # As pycocoevalcap's Meteor._stat for the hypothesis. It leaves the reference alone, where a
            # "|||" would split it into several references; here it is removed there too.
            hyp = hyp.replace("|||", "").replace("  ", " ")
            ref = ref.replace("|||", "").replace("  ", " ")
            (line,) = self._ask(f"SCORE ||| {ref} ||| {hyp}", 1)
            rows.append([float(v) for v in line.split()])
        return np.asarray(rows, dtype=np.float64).reshape(-1, STATS_LENGTH)

    def scores(self, stats: np.ndarray) -> np.ndarray:
        """METEOR of each row of `stats` (raw or summed), in one EVAL round trip."""
        stats = np.atleast_2d(stats)
        if len(stats) == 0:
            return np.zeros(0)
        body = " ||| ".join(" ".join(repr(float(v)) for v in row) for row in stats)
        out = self._ask(f"EVAL ||| {body}", len(stats) + 1)
        return np.asarray([float(v) for v in out[:-1]], dtype=np.float64)


def aggregable(stats: np.ndarray) -> np.ndarray:
    """Per-case rows whose plain column sums give the jar's corpus aggregate: a perfectly matched
    segment (all words matched, one chunk) contributes no chunks, as in MeteorStats.addStats."""
    stats = np.array(stats, dtype=np.float64, copy=True)
    test_matches = stats[:, 4:20:2].sum(axis=1)
    ref_matches = stats[:, 5:20:2].sum(axis=1)
    perfect = (test_matches == stats[:, 0]) & (ref_matches == stats[:, 1]) & (stats[:, _CHUNKS] == 1.0)
    stats[perfect, _CHUNKS] = 0.0
    return stats
