"""Run by tests/test_two_process_training.py under `torchrun --nproc_per_node 2` (gloo on the CPU):
the tiny connector recipe on two processes, once uninterrupted and once stopped at step 3 and
resumed. Arguments: DATA IMAGE CACHE DECODER OUT."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from training.connector_recipe import train_connector
from training_fixtures import train_config

# V-1 fine-tunes the decoder, so its dropout draws on each process's RNG. Batch 2 per process:
# the same 4 cases per optimiser step as one process with batch 4.
SETTINGS = {"variant": "v1", "epochs": 2, "batch_size": 2}

if __name__ == "__main__":
    torch.set_num_threads(1)
    data, image, cache, decoder, out = map(Path, sys.argv[1:6])
    setup = {"data": data, "image": image, "cache": cache}
    train_connector(train_config(setup, decoder, out / "whole", **SETTINGS), progress=False)
    train_connector(train_config(setup, decoder, out / "resumed", **SETTINGS), progress=False, stop_at_step=3)
    train_connector(train_config(setup, decoder, out / "resumed", **SETTINGS), resume=True, progress=False)
