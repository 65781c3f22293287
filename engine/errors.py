"""Typed errors. Each names the file (or object) at fault and says what is wrong, in words a
user can act on; the CLI prints `str(err)` on one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pathlib import Path


class Rad3dError(Exception):
    """Base of every error rad3d raises on purpose."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class VolumeError(Rad3dError):
    """A CT volume cannot be read or is not a plausible CT (corrupt file, wrong dimensionality,
    NaNs, bad spacing, non-CT intensities, ...)."""


class OutOfDomainError(VolumeError):
    """A readable CT that the run was not made for (not a chest CT, or image features far from the
    training scans): refused unless the user forces a draft, which is then marked."""


class DicomError(VolumeError):
    """A DICOM series cannot be assembled (no pixel data, mixed series, inconsistent slices)."""


class DatasetError(Rad3dError):
    """A dataset (CSV files plus volumes) is malformed. `problems` lists every bad row found."""

    def __init__(self, problem: str, path: str | Path | None = None, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            shown = "; ".join(self.problems[:20])
            more = f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
            problem = f"{problem}: {shown}{more}"
        super().__init__(problem, path)


class ConfigError(Rad3dError):
    """A configuration, run directory or checkpoint does not match what is asked of it."""


class CheckpointError(ConfigError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""
