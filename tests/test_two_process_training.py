"""The one training loop on two processes (torchrun, gloo on the CPU), with the tiny connector
recipe: the learning rate of every optimiser step is the one-process schedule, and a run stopped
mid-epoch and resumed from its checkpoint ends with the uninterrupted run's losses and weights
(every process's RNG state is in the checkpoint)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.checkpointing import find_checkpoint, read_state
from training.connector_recipe import train_connector
from training_fixtures import assert_same_training, train_config  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(setup: dict, decoder: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(REPO / "tests" / "two_process_training.py"),
           str(setup["data"]), str(setup["image"]), str(setup["cache"]), str(decoder), str(out)]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_processes_keep_the_schedule_and_resume_exactly(training_setup, tiny_gpt2_dir, tmp_path):
    _launch_two(training_setup, tiny_gpt2_dir, tmp_path)
    one = train_connector(train_config(training_setup, tiny_gpt2_dir, tmp_path / "one", variant="v1",
                                       epochs=2, batch_size=4),
                          progress=False)
    whole, resumed, single = (pd.read_csv(tmp_path / name / "metrics.csv") for name in ("whole", "resumed", "one"))

    # (a) 16 cases, 2 processes x batch 2 = 4 per step: 4 steps per epoch, 8 in all, as on one
    # process with batch 4, and the LR of each step is the same (stepped once per optimiser step).
    assert one.step == 8 and whole["step"].tolist() == list(range(1, 9)) == single["step"].tolist()
    np.testing.assert_array_equal(whole["lr"].to_numpy(), single["lr"].to_numpy())
    assert whole["lr"].iloc[-1] < whole["lr"].iloc[1]  # it really decays
    notes = json.loads((tmp_path / "whole" / "config.json").read_text())["notes"]["training"]
    assert notes["num_processes"] == 2 and notes["total_steps"] == 8

    # (b) stopped at step 3 (mid-epoch 1), resumed: the same steps, losses and weights.
    assert resumed["step"].tolist() == list(range(1, 9))
    assert_same_training(tmp_path / "resumed", tmp_path / "whole")
    state = read_state(find_checkpoint(tmp_path / "resumed"))
    assert state.finished and state.run_config["num_processes"] == 2
    # Each process's RNG state is kept: they differ (dropout drew differently on each).
    rng = torch.load(find_checkpoint(tmp_path / "resumed") / "rng.pt", weights_only=True)
    assert len(rng["cpu"]) == 2 and not torch.equal(rng["cpu"][0], rng["cpu"][1])
