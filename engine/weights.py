"""The one strict weight loader: a safetensors file (or tensors already read from a checkpoint file)
into a module, refused with one line naming the file when a key is missing, unexpected or of another
shape. Every module rad3d loads from disk goes through `load_weights_strict`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from engine.errors import CheckpointError

MAX_LISTED = 12


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"not a readable safetensors file ({err})", path) from None


def mismatches(module: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape mismatches as "key (checkpoint s, model s)") of `state`
    against the module's own state dict."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(t.shape)})"
                  for k, t in expected.items() if k in state and state[k].shape != t.shape]
    return missing, unexpected, mismatched


def assign(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy matching tensors into the module; a module built on the meta device (no memory spent on
    random weights first) gets them assigned, cast to its own dtypes."""
    expected = module.state_dict()
    on_meta = any(t.is_meta for t in expected.values())
    if on_meta:
        state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(dict(state), strict=False, assign=on_meta)


def _listing(title: str, items: list[str]) -> str:
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return f"{len(items)} {title}: {', '.join(items[:MAX_LISTED])}{more}"


def load_weights_strict(module: nn.Module, path: str | Path, what: str, *,
                        state: Mapping[str, torch.Tensor] | None = None, partial: bool = False) -> None:
    """Load `path` (a safetensors file; or `state`, tensors already read from it, e.g. the vision half
    of a CT-CLIP checkpoint) into `module`. Any unexpected key or shape mismatch, and any missing key
    unless `partial` (a file holding only the trained part of a module), raises CheckpointError
    naming the file and listing them all."""
    if state is None:
        state = read_safetensors(path)
    missing, unexpected, mismatched = mismatches(module, state)
    found = [_listing(title, items) for title, items in (
        ("missing key(s)", [] if partial else missing), ("unexpected key(s)", unexpected),
        ("shape mismatch(es)", mismatched)) if items]
    if found:
        raise CheckpointError(f"{what} weights do not match the model: " + "; ".join(found), path)
    assign(module, state)


def load_trainable_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                          source: str | Path | None = None) -> None:
    """Copy `state` into `module`'s trainable parameters only (what a run stores; the frozen rest comes
    from its own files). CheckpointError "weights do not fit {what}" naming missing, unexpected or
    mis-shaped keys (the first five), and `source`, the file."""
    expected = {name: p for name, p in module.named_parameters() if p.requires_grad}
    problems = [f"missing {k}" for k in sorted(set(expected) - set(state))]
    problems += [f"unexpected {k}" for k in sorted(set(state) - set(expected))]
    problems += [f"{k}: shape {tuple(state[k].shape)} in the checkpoint, {tuple(p.shape)} in the model"
                 for k, p in expected.items() if k in state and tuple(state[k].shape) != tuple(p.shape)]
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise CheckpointError(f"weights do not fit {what}: {shown}", source)
    with torch.no_grad():
        for k, p in expected.items():
            p.copy_(state[k])
