"""Phantom domains: what a `rad3d synth` dataset looks like. ct-rate-like (the default):
unenhanced chest CT, CT-RATE's 18 findings, CT-RATE-style reports. inspect-like: CT pulmonary
angiograms, the 21 findings of the inspect-like label set (pulmonary embolism first), CTPA-style
reports; image and text both differ, for out-of-domain studies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.errors import ConfigError
from engine.labels import LabelSet, load_label_set
from engine.synth.anatomy import Anatomy
from engine.synth.canvas import Layer
from engine.synth.findings import Planter

DEFAULT_DOMAIN = "ct-rate-like"
DOMAINS = ("ct-rate-like", "inspect-like")


@dataclass(frozen=True)
class Domain:
    name: str
    label_set: LabelSet
    planters: dict[str, Planter]
    write_report: Callable
    enhance: Callable[[Anatomy, np.random.Generator], None] | None = None  # the contrast phase, if any
    extra_layers: Callable[[Anatomy], list[Layer]] | None = None


@cache
def get_domain(name: str = DEFAULT_DOMAIN) -> Domain:
    if name == "ct-rate-like":
        from engine.synth.findings import PLANTERS
        from engine.synth.reports import write_report

        return Domain(name, load_label_set("ct-rate"), PLANTERS, write_report)
    if name == "inspect-like":
        from engine.synth import ctpa
        from engine.synth.ctpa_reports import write_ctpa_report

        label_set = load_label_set("inspect-like")
        assert list(ctpa.PLANTERS) and set(ctpa.PLANTERS) == set(label_set.names), "a planter per finding"
        return Domain(name, label_set, ctpa.PLANTERS, write_ctpa_report, ctpa.enhance, ctpa.heart_chambers)
    raise ConfigError(f"unknown phantom domain {name!r} (choose from {', '.join(DOMAINS)})")


def domain_label_set(name: str = DEFAULT_DOMAIN) -> LabelSet:
    return get_domain(name).label_set
