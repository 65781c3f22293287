"""Predictions written batch by batch while `rad3d evaluate` generates them, possibly by several
processes at once (each its shard of the cases, engine.shards), then merged into the one
predictions table a single process writes. A batch's rows are one file, written atomically, so a
crash or a failed shard loses at most the batches in flight and a rerun generates only what is
missing (with any number of processes).

EVAL/shards/job.json          what the rows depend on (run, split, generation settings); a rerun
                              with other settings is refused rather than mixed
EVAL/shards/rows-<i>.csv      one batch; <i> is the split position of its first case
The folder is removed once the evaluation is written.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from engine.errors import ConfigError

FOLDER = "shards"
JOB = "job.json"
# Columns the CSV would turn into text, and what they are (the rest are text).
TYPES = {"seconds": float, "new_tokens": int}


class PredictionShards:
    def __init__(self, eval_dir: Path, job: dict):
        self.folder = Path(eval_dir) / FOLDER
        self.job = json.loads(json.dumps(job))  # as it reads back from job.json

    def done(self) -> set[str]:
        """VolumeNames already generated for this job (none for a fresh folder). Reads only, so
        every process can call it before any writes."""
        path = self.folder / JOB
        if not path.is_file():
            if any(self.folder.glob("rows-*.csv")):
                raise ConfigError("holds partial predictions without their job.json; delete the folder to start over",
                                  self.folder)
            return set()
        try:
            theirs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"unreadable ({err}); delete the shards folder to start over", path) from None
        differ = sorted(k for k in self.job.keys() | theirs.keys() if self.job.get(k) != theirs.get(k))
        if differ:
            detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {self.job.get(k)!r} now" for k in differ)
            raise ConfigError(f"holds partial predictions made otherwise ({detail}); delete the shards folder "
                              "or evaluate into a new folder", path)
        return set(self._read()["VolumeName"])

    def start(self) -> None:
        """Record the job (the main process, once every process has read what is done)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.folder / JOB, lambda tmp: tmp.write_text(json.dumps(self.job, indent=1)))

    def write(self, rows: pd.DataFrame) -> None:
        """One batch's rows; their index is the cases' position in the split."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.folder / f"rows-{int(rows.index[0]):07d}.csv", lambda tmp: rows.to_csv(tmp, index=False))

    def merge(self, order: list[str]) -> pd.DataFrame:
        """Every shard's rows as one table in the order of `order` (the split's VolumeNames)."""
        rows = self._read().drop_duplicates("VolumeName").set_index("VolumeName")
        missing = [n for n in order if n not in rows.index]
        if missing:
            raise ConfigError(f"{len(missing)} case(s) have no predictions after all shards finished "
                              f"(first: {missing[0]}); rerun to generate them", self.folder)
        return rows.loc[order].reset_index()

    def _read(self) -> pd.DataFrame:
        files = sorted(self.folder.glob("rows-*.csv"))
        if not files:
            return pd.DataFrame({"VolumeName": []})
        try:
            table = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise ConfigError(f"unreadable partial predictions ({err}); delete the folder to start over",
                              self.folder) from None
        for column, kind in TYPES.items():
            table[column] = table[column].astype(kind)
        table["finished"] = table["finished"] == "True"
        return table


def remove_shards(eval_dir: Path) -> None:
    shutil.rmtree(Path(eval_dir) / FOLDER, ignore_errors=True)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    write(tmp)
    os.replace(tmp, path)
