"""This process's shard of a job that `accelerate launch` (or torchrun) split across processes and
machines: a disjoint, stable part of the cases (`take`), a barrier (`wait`), and the parts joined
(`gather`). A plain process, with no launcher, is shard 0 of 1 and every call is a no-op, so the
commands behave as they always did.

accelerate's `PartialState` reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, ...) and opens the process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")
WAIT = timedelta(hours=12)
# Where torchrun (`accelerate launch --multi_gpu`) and MPI launchers put the number of processes.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass
class Shard:
    index: int = 0
    count: int = 1
    device: torch.device | None = None  # this process's device (None: the caller's default)
    state: Any = None  # accelerate's PartialState when several processes run, else None

    @classmethod
    def launched(cls, device: str | torch.device | None = None) -> Shard:
        """This process's shard under the launcher that started it (shard 0 of 1 without one, and
        then accelerate is not even imported), and its device: `device` (default CUDA when present),
        on GPUs the process's own one (cuda:LOCAL_RANK)."""
        from engine.inference import pick_device

        device, _ = pick_device(device)
        if _launched_processes() == 1:
            return cls(device=device)
        from accelerate import PartialState

        # The processes only wait for each other and swap small summaries, so they meet over gloo
        # on the CPU even beside GPUs (no NCCL communicators in GPU memory), with a timeout long
        # enough for the first shard to finish hours before the last.
        state = PartialState(cpu=True, timeout=WAIT)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", state.local_process_index)
            torch.cuda.set_device(device)
        return cls(state.process_index, state.num_processes, device, state)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every count-th from its index, so the shards are disjoint, cover
        `items`, and differ in size by at most one."""
        return list(items[self.index::self.count])

    def wait(self) -> None:
        """Return once every process has reached this point."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, part: T) -> list[T]:
        """Every process's `part`, in shard order, on every process."""
        if self.state is None:
            return [part]
        from accelerate.utils import gather_object

        return gather_object([part])

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. creates a folder); the others after it."""
        if not self.is_main:
            self.wait()
        yield
        if self.is_main:
            self.wait()

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


def _launched_processes() -> int:
    for name in WORLD_SIZE_VARIABLES:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return 1
