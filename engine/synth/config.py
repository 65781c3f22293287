"""Settings of a synthetic dataset and the parsing of `--prevalence`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.config import JsonConfig, setting
from engine.errors import ConfigError
from engine.synth.domains import DEFAULT_DOMAIN, DOMAINS, domain_label_set

GENERATOR_VERSION = "1"
DEFAULT_PREVALENCE = 0.3


def default_prevalence(domain: str = DEFAULT_DOMAIN) -> dict[str, float]:
    return {n: DEFAULT_PREVALENCE for n in domain_label_set(domain).names}


@dataclass
class SynthConfig(JsonConfig):
    """n volumes from `seed`. Each scan draws each finding independently with its prevalence,
    except that a `normal_fraction` of scans is drawn with no finding at all (so the marginal
    rate of a finding is (1 − normal_fraction)·p). `scale` multiplies voxel spacing and divides
    the matrix; `store_hu` writes HU instead of CT-RATE's raw values (HU + 1024)."""

    n: int = setting(help="number of volumes")
    seed: int = setting(0, "random seed (same seed, same dataset)")
    scale: float = setting(1.0, "multiply voxel spacing and divide the matrix by this (4 gives 128² in-plane, fast)")
    # The command reads --prevalence its own way (parse_prevalence below).
    prevalence: dict[str, float] = setting(
        default_factory=dict, cli=False,
        help="a JSON file {finding: p} or name=p pairs, e.g. all=0.3 lung_nodule=0.5 (default 0.3 each)")
    store_hu: bool = setting(False, "store HU in the files (RescaleIntercept 0) instead of CT-RATE's HU + 1024",
                             flag="--hu")
    workers: int = setting(1, "processes generating volumes in parallel")
    normal_fraction: float = setting(0.1, "fraction of scans drawn with no finding at all")
    split_fractions: tuple[float, float, float] = setting((0.70, 0.15, 0.15), "train, valid and test fractions of the "
                                                          "patients", metavar=("TRAIN", "VALID", "TEST"))
    p_second_scan: float = setting(0.15, "probability that a patient has a second scan")
    p_second_recon: float = setting(0.2, "probability that a scan has a second reconstruction")
    domain: str = setting(DEFAULT_DOMAIN, "ct-rate-like: unenhanced chest CT, CT-RATE's 18 findings and report style; "
                          "inspect-like: CT pulmonary angiograms (contrast), pulmonary embolism and the 21 findings "
                          "of the inspect-like label set, CTPA-style reports", choices=DOMAINS)

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, got {self.n}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be non-negative, got {self.seed}")
        if not (0.2 <= self.scale <= 32):
            raise ConfigError(f"--scale must be between 0.2 and 32, got {self.scale}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.domain not in DOMAINS:
            raise ConfigError(f"--domain must be one of {', '.join(DOMAINS)}, got {self.domain!r}")
        names = domain_label_set(self.domain).names
        unknown = sorted(set(self.prevalence) - set(names))
        if unknown:
            raise ConfigError(f"prevalence names findings not in the {self.domain} domain: {', '.join(unknown)}")
        full = default_prevalence(self.domain)
        full.update(self.prevalence)
        self.prevalence = {n: float(full[n]) for n in names}
        bad = [f"{k}={v}" for k, v in self.prevalence.items() if not 0.0 <= v <= 1.0]
        if bad or not 0.0 <= self.normal_fraction <= 1.0:
            raise ConfigError(f"probabilities must lie in [0, 1]: {', '.join(bad) or self.normal_fraction}")


def parse_prevalence(specs: list[str] | str | None, domain: str = DEFAULT_DOMAIN) -> dict[str, float]:
    """`--prevalence` values: a JSON file ({"Lung nodule": 0.4, ...}) or `name=p` pairs
    (comma- or space-separated; `all=p` sets every finding first). Names are matched loosely:
    lung_nodule, "Lung nodule" and LUNG-NODULE are the same finding."""
    from engine.synth.findings import canonical_finding

    label_set = domain_label_set(domain)
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, float] = {}
    pairs: list[tuple[str, str]] = []
    for spec in specs:
        if spec.endswith(".json") or Path(spec).is_file():
            try:
                data = json.loads(Path(spec).read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"cannot read prevalence file: {err}", spec) from None
            if not isinstance(data, dict):
                raise ConfigError("a prevalence file must hold a JSON object {finding: probability}", spec)
            pairs += [(str(k), str(v)) for k, v in data.items()]
            continue
        for item in spec.replace(",", " ").split():
            if "=" not in item:
                raise ConfigError(f"--prevalence expects name=p pairs or a JSON file, got {item!r}")
            k, v = item.split("=", 1)
            pairs.append((k, v))
    for k, v in sorted(pairs, key=lambda kv: kv[0].strip().lower() != "all"):
        try:
            p = float(v)
        except ValueError:
            raise ConfigError(f"prevalence of {k!r} is not a number: {v!r}") from None
        if k.strip().lower() == "all":
            out.update({n: p for n in label_set.names})
        else:
            out[canonical_finding(k, label_set)] = p
    return out
