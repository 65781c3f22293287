"""The one training loop of every recipe (`encoder_recipe.py`, `classifier_recipe.py`, `connector_recipe.py`).

A recipe gives what is its own (a `Recipe`: the batches of an epoch, batch -> loss, validation,
which evaluations may be selected, how its weights are read and loaded); `TrainLoop` does the rest
once, the same way for all:

- batches come from accelerate's prepared DataLoader: on N processes each process takes every N-th
  batch of the epoch (so `batch_size` is per process and an epoch has ceil(batches / N) steps);
- the learning rate follows `lr_multiplier`, stepped by hand once per optimiser step (accelerate's
  scheduler wrapper would step it N times per step, for schedules counted on one process);
- validation after every epoch, every `eval_every_steps` steps and at the last step; the lowest
  validation loss is kept as "best" (on disk, or in memory for recipes without a run folder);
  `patience` evaluations without a lower loss stop the run early;
- checkpoints (`training/checkpointing.py`) at every epoch end, every `save_every_steps` steps and
  when stopped, with every process's RNG state, so a resumed run (mid-epoch too: the batches
  already seen are skipped) continues exactly as the uninterrupted one;
- one progress bar (tqdm, main process) and one log, RUN/metrics.csv, a row per optimiser step:
  step, epoch (1-based), loss (mean over processes), lr, val_loss (where validated), samples_per_s.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import CheckpointError, ConfigError
from training.checkpointing import (
    MetricsLog,
    TrainState,
    find_checkpoint,
    load_optimizer_state,
    read_state,
    read_trainable,
    restore_rng,
    rng_states,
    save_checkpoint,
)

SCHEDULES = ("linear", "cosine", "constant")


def lr_multiplier(step: int, *, warmup: int, total: int, schedule: str = "linear", floor: float = 0.0) -> float:
    """LR multiplier at optimiser step `step` (0-based): linear warmup over `warmup` steps to 1, then
    linear or cosine decay to `floor` at step `total`, or constant. (transformers' schedulers
    behave the same, but importing them pulls in peft and costs seconds.)"""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return floor + (1.0 - floor) * decay


def make_scheduler(optimizer, *, warmup: int, total: int, schedule: str = "linear", floor: float = 0.0):
    """A LambdaLR following `lr_multiplier`; stepped by TrainLoop once per optimiser step."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, warmup=warmup, total=total, schedule=schedule, floor=floor))


def steps_per_epoch(n_cases: int, batch_size: int, num_processes: int) -> int:
    """Optimiser steps of one epoch: the prepared DataLoader deals the batches out to the processes
    (accelerate's even_batches fills the last round from the start)."""
    return math.ceil(math.ceil(n_cases / batch_size) / num_processes)


def checkpoint_to_resume(run: Path, resume: bool) -> Path | None:
    """RUN's last checkpoint when resuming; an existing one without `resume` is refused."""
    checkpoint = find_checkpoint(run)
    if checkpoint is not None and not resume:
        step = read_state(checkpoint).step
        raise ConfigError(f"already holds a training checkpoint (step {step}); pass --resume to continue it "
                          "or choose another --out", run)
    return checkpoint


def resume_state(checkpoint: Path | None, identity: dict) -> TrainState:
    """The state to start from: fresh, or the checkpoint's when it was written under `identity`
    (the settings that decide the trajectory, the number of processes among them)."""
    if checkpoint is None:
        return TrainState(run_config=identity)
    state = read_state(checkpoint)
    theirs = state.run_config or {}
    if theirs != identity:
        differ = sorted(k for k in set(identity) | set(theirs) if theirs.get(k) != identity.get(k))
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {identity.get(k)!r}" for k in differ)
        raise CheckpointError(f"cannot resume: other training settings than the checkpoint's ({detail})", checkpoint)
    return state


class Recipe:
    """What a recipe gives the loop. `epoch_loader(epoch)`: an unprepared DataLoader over the fixed
    batches of that epoch (same on every process; the loop shards it). `loss(model, batch)`: the
    training loss of one batch. `evaluate(model, epoch)`: validation loss (the same value on every
    process), or None. `selectable(epoch)`: may that epoch's evaluation become "best"?
    `start_epoch(model, epoch, fresh)`: work before an epoch (fresh: False when resuming inside it)."""

    def epoch_loader(self, epoch: int):
        raise NotImplementedError

    def loss(self, model, batch) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model, epoch: int) -> float | None:
        return None

    def selectable(self, epoch: int) -> bool:
        return True

    def start_epoch(self, model, epoch: int, fresh: bool) -> None:
        pass

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint keeps (of the unwrapped model)."""
        return model.state_dict()

    def load_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
        from engine.weights import load_weights_strict

        load_weights_strict(model, source, "checkpoint", state=weights)


@dataclass
class LoopSettings:
    total_steps: int
    max_grad_norm: float = 0.0  # 0: no clipping
    eval_every_steps: int | None = None
    save_every_steps: int | None = None
    patience: int | None = None  # evaluations without a lower validation loss before stopping
    stop_at_step: int | None = None  # stop early with a checkpoint (the schedule is unchanged)
    time_limit_s: float | None = None
    progress: bool = True
    desc: str = "train"


class TrainLoop:
    """Runs a Recipe (see module doc). `run`: the RUN folder for checkpoints and metrics.csv, or
    None (no files; the best weights kept in memory). `checkpoint`: the one to resume from."""

    def __init__(self, accelerator, model, optimizer, scheduler, recipe: Recipe, settings: LoopSettings, *,
                 state: TrainState, run: Path | None = None, checkpoint: Path | None = None):
        self.accelerator, self.recipe, self.settings, self.state = accelerator, recipe, settings, state
        self.run_dir = None if run is None else Path(run)
        self.scheduler = scheduler  # not prepared: stepped once per optimiser step, see module doc
        self.checkpoint = checkpoint
        if checkpoint is not None:
            recipe.load_weights(model, read_trainable(checkpoint), checkpoint / "trainable.safetensors")
            load_optimizer_state(checkpoint, optimizer, scheduler)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.rows: list[dict] = []  # every step's metrics row (also written to metrics.csv)
        self._best_in_memory: dict[str, torch.Tensor] | None = None
        self._log = None
        if self.run_dir is not None and accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:  # a fresh start: nothing of an earlier, unfinished attempt may count as best
                for stale in (self.run_dir / "checkpoints").glob("best*"):
                    shutil.rmtree(stale)
            self._log = MetricsLog(self.run_dir, resume_step=state.step if checkpoint is not None else None)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def note(self, message: str) -> None:
        """One line on the main process, above the progress bar."""
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def run(self, on_step: Callable[[int, float], None] | None = None) -> TrainState:
        """Train until the last step (or stop_at_step / time limit / patience); returns the state."""
        from tqdm.auto import tqdm

        s, state, acc = self.settings, self.state, self.accelerator
        if self.checkpoint is not None:  # right before the first step, as the uninterrupted run stands there
            restore_rng(self.checkpoint, acc.process_index, acc.num_processes)
        self._started = time.monotonic()
        bar = tqdm(total=s.total_steps, initial=state.step, desc=s.desc, unit="step", dynamic_ncols=True,
                   disable=not (s.progress and acc.is_local_main_process))
        stopped = state.step >= s.total_steps
        try:
            while not stopped:
                loader = acc.prepare(self.recipe.epoch_loader(state.epoch))
                epoch_len = len(loader)
                self.recipe.start_epoch(self.model, state.epoch, fresh=state.batches_done == 0)
                if state.batches_done:
                    loader = acc.skip_first_batches(loader, state.batches_done)
                for batch in loader:
                    row = self._step(batch)
                    stopped = self._after_step(row, end_of_epoch=state.batches_done >= epoch_len)
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                    **({"val": f"{row['val_loss']:.4f}"} if row["val_loss"] is not None else {}))
                    if on_step is not None:
                        on_step(state.step, row["loss"])
                    if stopped:
                        break
        finally:
            bar.close()
            if self._log is not None:
                self._log.close()
        return state

    def _step(self, batch) -> dict:
        """One optimiser step on one batch (per process); its metrics row."""
        acc, state = self.accelerator, self.state
        tick = time.perf_counter()
        self.model.train()
        with acc.autocast():
            loss = self.recipe.loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if self.settings.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        state.step += 1
        state.batches_done += 1
        samples = len(batch["index"]) * acc.num_processes
        return {"step": state.step, "epoch": state.epoch + 1, "loss": acc.reduce(loss.detach().float(), "mean").item(),
                "lr": lr, "val_loss": None, "samples": samples,
                "samples_per_s": samples / max(time.perf_counter() - tick, 1e-9)}

    def _after_step(self, row: dict, *, end_of_epoch: bool) -> bool:
        """Validate, keep the best, log and checkpoint as the settings ask; True to stop."""
        s, state = self.settings, self.state
        last = state.step >= s.total_steps
        epoch = state.epoch
        if end_of_epoch or last or _every(state.step, s.eval_every_steps):
            row["val_loss"] = self.recipe.evaluate(self.model, epoch)
        if end_of_epoch:
            state.epoch += 1
            state.batches_done = 0
        val = row["val_loss"]
        if val is not None and self.recipe.selectable(epoch):
            if state.best_val_loss is None or val < state.best_val_loss:
                state.best_val_loss, state.best_step, state.stale_evals = val, state.step, 0
                self._save("best", with_optimizer=False)
            else:
                state.stale_evals += 1
        self.rows.append(row)
        if self._log is not None:
            self._log.write(**row)
        out_of_patience = s.patience is not None and state.stale_evals >= s.patience
        stopped = out_of_patience or (s.stop_at_step is not None and state.step >= s.stop_at_step) or (
            s.time_limit_s is not None and time.monotonic() - self._started >= s.time_limit_s)
        state.finished = last or out_of_patience
        if end_of_epoch or last or stopped or _every(state.step, s.save_every_steps):
            self._save("last", with_optimizer=True)
        return last or stopped

    def _save(self, name: str, *, with_optimizer: bool) -> None:
        """Checkpoint `name` (every process takes part: their RNG states are gathered first)."""
        acc = self.accelerator
        rng = rng_states(acc) if with_optimizer else None
        if self.run_dir is None:
            if name == "best":
                self._best_in_memory = {k: v.detach().cpu().clone() for k, v in self.recipe.weights(self.unwrapped).items()}
            return
        if acc.is_main_process:
            save_checkpoint(self.run_dir, name, self.state, self.recipe.weights(self.unwrapped),
                            optimizer=self.optimizer if with_optimizer else None,
                            scheduler=self.scheduler if with_optimizer else None, rng=rng)
        acc.wait_for_everyone()

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        """The weights of the lowest selectable validation loss (None when there was no validation)."""
        if self.run_dir is None:
            return copy.copy(self._best_in_memory)
        best = find_checkpoint(self.run_dir, "best")
        return None if best is None else read_trainable(best)


def _every(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


class TensorBatches:
    """A recipe's `epoch_loader` over in-memory tensors `self.x` (inputs) and `self.y` (targets):
    shuffled batches of `self.config.batch_size`, seeded by `self.config.seed` and the epoch, as
    training.data gives them; each batch is {"index", "x", "y"}."""

    def epoch_loader(self, epoch: int):
        from training.data import batch_loader, epoch_batches

        batches = epoch_batches(len(self.x), self.config.batch_size, seed=self.config.seed, epoch=epoch)
        return batch_loader(self.x, self._collate, batches, seed=self.config.seed + epoch)

    def _collate(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices)
        return {"index": idx, "x": self.x[idx], "y": self.y[idx]}
