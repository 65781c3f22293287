"""Encoder input tensors of a whole dataset, preprocessed once before encoder training.

Training an encoder reads every volume many times; reading and resampling a NIfTI each time would
cost more than the training step itself at the demo grid. So each volume is read and preprocessed
once (in DataLoader worker processes, as `rad3d embed` does) into one float32 tensor in memory,
optionally kept on disk as DIR/<preprocess fingerprint>/<VolumeName>.npy so a resumed run skips it.
float32, not float16: the tensors are also what the final classifier report and cache are computed
from, and they must equal what inference computes from the same file.

What is kept is the one plain channel before `apply_windows` (the config's `base`): multi-window
inputs are pointwise functions of it, so training makes them batch by batch, and the memory held
stays one channel per volume however many windows the encoder takes (five windows of 1,200 demo
volumes would be 10 GiB). Configs that differ only in windows share the files on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.embedding import PreprocessedVolumes
from engine.errors import DatasetError
from engine.preprocess import PreprocessConfig


def _disk_path(cache_dir: Path, config: PreprocessConfig, name: str) -> Path:
    return Path(cache_dir) / config.fingerprint() / f"{name}.npy"


def load_volume_tensors(
    dataset,
    names: list[str],
    config: PreprocessConfig,
    *,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """(N, 1, D, H, W) float32 plain-channel inputs of `names` (VolumeNames of `dataset`), in that
    order; `apply_windows(batch, config)` turns a batch into the encoder's input. Raises one
    DatasetError naming every volume that could not be read or preprocessed."""
    from tqdm.auto import tqdm

    config = config.base

    if not names:
        raise DatasetError("no volumes to preprocess", getattr(dataset, "root", None))
    tx, ty, tz = config.shape_xyz
    out = torch.empty((len(names), 1, tz, tx, ty), dtype=torch.float32)
    todo = []
    for i, name in enumerate(names):
        path = _disk_path(cache_dir, config, name) if cache_dir else None
        if path is not None and path.is_file():
            out[i] = torch.from_numpy(np.load(path))
        else:
            todo.append(i)
    failed: dict[str, str] = {}
    if todo:
        loader = DataLoader(
            PreprocessedVolumes(dataset, [names[i] for i in todo], config),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
        )
        bar = tqdm(total=len(todo), desc="preprocess", unit="vol", disable=not progress)
        position = {names[i]: i for i in todo}
        for name, x, error in loader:
            if error is not None:
                failed[name] = error
            else:
                out[position[name]] = x
                if cache_dir:
                    _save_npy(_disk_path(cache_dir, config, name), x.numpy())
            bar.update(1)
        bar.close()
    if failed:
        raise DatasetError(f"{len(failed)} volume(s) could not be preprocessed", getattr(dataset, "root", None),
                           problems=[f"{n}: {e}" for n, e in failed.items()])
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
