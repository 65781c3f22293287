"""One way to make the accelerate `Accelerator` for every training recipe: bf16 mixed precision
on CUDA, full fp32 on the CPU (a bf16 step on these CPUs, which lack bf16 units, ran more than 20×
slower than fp32). The same code then runs on the CPU, one GPU, or several under `accelerate launch`.
"""

from __future__ import annotations

from engine.errors import ConfigError

MIXED_PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")


def resolve_mixed_precision(requested: str = "auto", *, cuda: bool | None = None) -> str:
    """"auto" → "bf16" with CUDA, "no" without; a half precision asked for on the CPU is refused."""
    import torch

    if requested not in MIXED_PRECISION_CHOICES:
        raise ConfigError(f"mixed precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got {requested!r}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested == "auto":
        return "bf16" if cuda else "no"
    if requested != "no" and not cuda:
        raise ConfigError(f"{requested} mixed precision on the CPU is far slower than fp32 here; use --mixed-precision no")
    return requested


def make_accelerator(mixed_precision: str = "auto"):
    """An Accelerator for this machine (see module doc). Under `accelerate launch` (or `torchrun`)
    the process group comes from the launcher's environment; no hand-written distribution is
    involved. Without CUDA it is asked for the CPU explicitly: only then does accelerate join
    launched processes over gloo (MULTI_CPU) instead of running each alone."""
    import torch
    from accelerate import Accelerator

    return Accelerator(mixed_precision=resolve_mixed_precision(mixed_precision), cpu=not torch.cuda.is_available())


def main_print(accelerator, *args, **kwargs) -> None:
    """print on the main process only (one line per message, not one per GPU)."""
    if accelerator is None or accelerator.is_main_process:
        print(*args, **kwargs)
