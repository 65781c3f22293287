"""Training checkpoints of a run (every recipe, through training/loop.py), and its per-step log.

    RUN/checkpoints/last/   trainable.safetensors   every trainable tensor (the recipe's choice: e.g. connector,
                                                    decoder or LoRA when trained; encoder + head)
                            optimizer.pt            AdamW state (torch.save; loaded with weights_only=True)
                            scheduler.pt            LR scheduler state
                            rng.pt                  every process's torch CPU (and CUDA) RNG state
                            state.json              TrainState: step, epoch, batches done, best so far
    RUN/checkpoints/best/   trainable.safetensors + state.json of the lowest validation loss
    RUN/metrics.csv         one row per optimiser step: step, epoch, loss, lr, val_loss, samples_per_s

Only trainable tensors are saved (accelerate's save_state would write the whole frozen decoder every
time); the RNG states of all processes are gathered to the main process, which writes the folder.
A checkpoint folder is written beside its target and renamed into place, so the one that exists is
complete; the previous one stays as `last.old` until the new one is in place.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.config import JsonConfig
from engine.errors import CheckpointError, ConfigError
from engine.weights import read_safetensors

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.csv"
METRICS_COLUMNS = ("step", "epoch", "loss", "lr", "val_loss", "samples_per_s")


@dataclass
class TrainState(JsonConfig):
    step: int = 0  # optimiser steps done
    epoch: int = 0  # the epoch in progress (or next to start)
    batches_done: int = 0  # batches of `epoch` already trained on (per process)
    best_val_loss: float | None = None
    best_step: int | None = None
    stale_evals: int = 0  # validations since the best one (for early stopping)
    finished: bool = False
    run_config: dict | None = None  # TrainConfig.identity() of the run that wrote it



def checkpoint_dir(run: Path, name: str) -> Path:
    return Path(run) / CHECKPOINTS / name


def save_checkpoint(
    run: Path,
    name: str,
    state: TrainState,
    trainable: dict[str, torch.Tensor],
    *,
    optimizer=None,
    scheduler=None,
    rng: dict | None = None,
) -> Path:
    """Write checkpoint `name` (last / best) atomically; `rng` as `rng_states` gives it."""
    target = checkpoint_dir(run, name)
    tmp = target.with_name(name + ".tmp")
    old = target.with_name(name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if rng is not None:
        torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state.to_dict(), indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(run: Path, name: str = "last") -> Path | None:
    """The complete checkpoint `name`, or the previous one when a crash hit between the renames."""
    for candidate in (checkpoint_dir(run, name), checkpoint_dir(run, name + ".old")):
        if (candidate / "state.json").is_file() and (candidate / "trainable.safetensors").is_file():
            return candidate
    return None


def read_state(folder: Path) -> TrainState:
    path = folder / "state.json"
    try:
        return TrainState.from_dict(json.loads(path.read_text()), path)
    except (OSError, json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"cannot read training state ({err})", path) from None


def read_trainable(folder: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(folder / "trainable.safetensors")


def load_optimizer_state(folder: Path, optimizer, scheduler) -> None:
    """Restore optimiser and scheduler states saved with the weights in `folder`."""
    for file, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        path = folder / file
        try:
            obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint lacks {file}", folder) from None
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{file} does not fit this run ({err})", path) from None


def rng_states(accelerator) -> dict:
    """Every process's RNG states, gathered (a collective: all processes call it), for rng.pt:
    {"cpu": [one per process], "cuda": [the device's, one per process]}. Dropout draws differ per
    process, so restoring only the main process's state would not resume a multi-process run exactly."""
    from accelerate.utils import gather_object

    mine = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        mine["cuda"] = torch.cuda.get_rng_state()
    gathered = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    return {key: [g[key] for g in gathered] for key in mine}


def restore_rng(folder: Path, process_index: int = 0, num_processes: int = 1) -> None:
    """Set this process's RNG states from `folder`/rng.pt (rng_states' layout; a checkpoint of an
    older layout holds the main process's states as one tensor)."""
    path = folder / "rng.pt"
    if not path.is_file():
        return
    rng = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(rng["cpu"], torch.Tensor):  # older layout: the main process only
        rng = {"cpu": [rng["cpu"]], **({"cuda": [rng["cuda"][0]]} if "cuda" in rng else {})}
    if len(rng["cpu"]) != num_processes:
        raise CheckpointError(f"rng.pt holds {len(rng['cpu'])} processes' states, this run has {num_processes}", path)
    torch.set_rng_state(rng["cpu"][process_index])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"][process_index])


class MetricsLog:
    """RUN/metrics.csv, appended a row per step. On resume, rows after the checkpoint's step are
    dropped first (those steps are trained again), so every step appears once."""

    def __init__(self, run: Path, *, resume_step: int | None):
        self.path = Path(run) / METRICS_FILE
        rows = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=METRICS_COLUMNS, extrasaction="ignore")

    def write(self, **row) -> None:
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_metrics(run: Path):
    """RUN/metrics.csv as a DataFrame (empty val_loss cells as NaN)."""
    import pandas as pd

    return pd.read_csv(Path(run) / METRICS_FILE)
