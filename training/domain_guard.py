"""Fitting a run's domain guard (engine.domain.FeatureGuard) from the embedding cache: the mean and
shrunk covariance of the training split's latents, the threshold from the validation split's, as
every later check of a scan uses them. `rad3d train` does this at the end of training; `rad3d
domain-guard` does it for a run made before guards existed."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import DatasetError


@dataclass
class GuardFit:
    guard: object  # engine.domain.FeatureGuard
    train_cases: int
    valid_cases: int

    def describe(self) -> str:
        c = self.guard.calibration
        return (f"domain guard: Mahalanobis distance to {self.train_cases} training latents, threshold "
                f"{self.guard.threshold:.2f} ({c['quantile']:.1%} quantile of {c['cases']} {c['split']} cases "
                f"x {c['margin']}); false-positive rate on {c['split']}: {c['false_positive_rate']:.1%}")


def fit_domain_guard(dataset, cache, *, train_split: str = "train", valid_split: str = "valid") -> GuardFit:
    """Fit on `train_split`'s cached latents, calibrate on `valid_split`'s (on the training split
    itself, said so in the calibration, when the dataset has no validation cases)."""
    from engine.domain import FeatureGuard

    train = [c.volume_name for c in dataset.split(train_split)]
    if len(train) < 2:
        raise DatasetError(f"the domain guard needs at least 2 {train_split!r} cases, found {len(train)}", dataset.root)
    valid = [c.volume_name for c in dataset.split(valid_split)]
    latents, _ = cache.stack(train)
    guard = FeatureGuard.fit(latents)
    if valid:
        guard.calibrate(cache.stack(valid)[0], split=valid_split)
    else:
        guard.calibrate(latents, split=train_split)
    return GuardFit(guard, len(train), len(valid))


def attach_domain_guard(run_dir, dataset, cache, **splits) -> GuardFit:
    """Fit the guard and store it with the run (engine.rundir.save_domain_guard)."""
    from engine.rundir import open_run, save_domain_guard

    fit = fit_domain_guard(dataset, cache, **splits)
    save_domain_guard(open_run(run_dir, check=False), fit.guard)
    return fit
