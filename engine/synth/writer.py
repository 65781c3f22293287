"""Writing a phantom dataset laid out like CT-RATE.

DIR/volumes/train_<p>/train_<p>_<scan>/train_<p>_<scan>_<recon>.nii.gz   int16, HU + 1024
DIR/reports.csv, labels.csv, metadata.csv, splits.csv, phantom_truth.json
Every name starts with "train_" as CT-RATE's training names do; the split lives in splits.csv.
Two reconstructions of a scan share anatomy, findings and report; two scans of a patient share
anatomy only, which is why splits are drawn per patient.
"""

from __future__ import annotations

import gzip
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from engine.errors import ConfigError
from engine.labels import ct_rate
from engine.synth.config import GENERATOR_VERSION, SynthConfig

OUR_FILES = ("reports.csv", "labels.csv", "metadata.csv", "splits.csv", "phantom_truth.json")
MANUFACTURERS = (("SIEMENS", "SOMATOM Definition Edge"), ("PHILIPS", "Ingenuity CT"),
                 ("GE MEDICAL SYSTEMS", "Revolution EVO"), ("TOSHIBA", "Aquilion PRIME"))


@dataclass(frozen=True)
class VolumePlan:
    name: str
    patient: int
    scan: str
    recon: int
    patient_seed: int
    scan_seed: int
    recon_seed: int
    findings: tuple[str, ...]


def _derive(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def plan_dataset(cfg: SynthConfig) -> list[VolumePlan]:
    """Which volumes to make: patients with one or two scans, scans with one or two
    reconstructions, until there are `cfg.n` volumes; findings drawn once per scan."""
    names = ct_rate().names
    plans: list[VolumePlan] = []
    patient = 0
    while len(plans) < cfg.n:
        patient += 1
        prng = np.random.default_rng([cfg.seed, patient, 0])
        n_scans = 2 if prng.random() < cfg.p_second_scan else 1
        for si in range(n_scans):
            scan = "ab"[si]
            srng = np.random.default_rng([cfg.seed, patient, si + 1])
            normal = srng.random() < cfg.normal_fraction
            draws = srng.random(len(names))
            found = () if normal else tuple(n for n, d in zip(names, draws) if d < cfg.prevalence[n])
            n_recons = 2 if srng.random() < cfg.p_second_recon else 1
            for recon in range(1, n_recons + 1):
                if len(plans) == cfg.n:
                    break
                plans.append(VolumePlan(
                    name=f"train_{patient}_{scan}_{recon}.nii.gz", patient=patient, scan=scan, recon=recon,
                    patient_seed=_derive(cfg.seed, patient), scan_seed=_derive(cfg.seed, patient, si + 1),
                    recon_seed=_derive(cfg.seed, patient, si + 1, recon), findings=found))
    return plans


def assign_splits(plans: list[VolumePlan], cfg: SynthConfig) -> dict[str, str]:
    """train/valid/test per patient (never split across), seeded."""
    patients = sorted({p.patient for p in plans})
    order = np.random.default_rng([cfg.seed, 7]).permutation(len(patients))
    n = len(patients)
    n_train = int(round(cfg.split_fractions[0] * n))
    n_valid = int(round(cfg.split_fractions[1] * n))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[patients[i]] = "train" if rank < n_train else ("valid" if rank < n_train + n_valid else "test")
    return {p.name: split_of[p.patient] for p in plans}


def volume_path(root: Path, name: str) -> Path:
    stem = name.removesuffix(".nii.gz")
    parts = stem.split("_")
    return root / "volumes" / "_".join(parts[:2]) / "_".join(parts[:3]) / name


def nifti_affine(spacing, origin) -> np.ndarray:
    """Voxel axes run to patient Left, Posterior, Superior; nibabel's world is RAS, so the
    first two axes get negative steps (aff2axcodes → ('L', 'P', 'S'))."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return aff


def save_nifti(path: Path, hu: np.ndarray, spacing, origin, store_hu: bool) -> None:
    import nibabel as nib

    offset = 0 if store_hu else 1024
    raw = (np.rint(hu) + offset).astype(np.int16)
    img = nib.Nifti1Image(raw, nifti_affine(spacing, origin))
    img.header.set_data_dtype(np.int16)
    img.header.set_xyzt_units("mm")
    data = bytearray(img.to_bytes())
    # nibabel writes "no scaling" as NaN; CT-RATE's files say slope 1, intercept 0 explicitly.
    data[112:120] = np.array([1.0, 0.0], dtype="<f4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the files byte-identical for the same seed.
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1, mtime=0))


def make_volume(plan: VolumePlan, root: str, scale: float, store_hu: bool) -> dict:
    """Generate and write one volume; return its CSV rows and truth."""
    from engine.synth.case import generate_case

    case = generate_case(plan.scan_seed, plan.findings, scale, patient_seed=plan.patient_seed,
                         recon_seed=plan.recon_seed)
    save_nifti(volume_path(Path(root), plan.name), case.hu, case.spacing, case.grid.origin, store_hu)
    prng = np.random.default_rng([plan.patient_seed, 9])
    sex = "M" if prng.random() < 0.55 else "F"
    age = int(prng.integers(25, 86))
    maker, model = MANUFACTURERS[int(np.random.default_rng([plan.scan_seed, 9]).integers(len(MANUFACTURERS)))]
    sx, sy, sz = case.spacing
    nx, ny, nz = case.hu.shape
    meta = {
        "VolumeName": plan.name, "Manufacturer": maker, "ManufacturerModelName": model, "PatientSex": sex,
        "PatientAge": f"{age:03d}Y", "PatientPosition": "HFS", "Rows": ny, "Columns": nx, "NumberofSlices": nz,
        "ReconstructionDiameter": round(nx * sx, 1), "SliceThickness": sz, "XYSpacing": f"[{sx}, {sy}]",
        "ZSpacing": sz, "RescaleIntercept": 0 if store_hu else -1024, "RescaleSlope": 1, "RescaleType": "HU",
    }
    report = {"VolumeName": plan.name, "ClinicalInformation_EN": case.report.clinical,
              "Technique_EN": case.report.technique, "Findings_EN": case.report.findings,
              "Impressions_EN": case.report.impressions}
    labels = {"VolumeName": plan.name, **case.labels}
    truth = {"patient": plan.patient, "scan": plan.scan, "recon": plan.recon, "shape": [nx, ny, nz],
             "spacing_mm": [sx, sy, sz], "seeds": [plan.patient_seed, plan.scan_seed, plan.recon_seed],
             "findings": case.truth}
    return {"meta": meta, "report": report, "labels": labels, "truth": truth}


def prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("output path exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError("output directory is not empty (use --force to overwrite)", out)
        # Remove only what a previous `rad3d synth` wrote.
        if (out / "volumes").is_dir():
            shutil.rmtree(out / "volumes")
        for f in OUR_FILES:
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_dataset(cfg: SynthConfig, out: str | Path, force: bool = False, progress: bool = True,
                  only_splits: tuple[str, ...] = ()) -> Path:
    """Write `cfg.n` phantoms and their CSVs under `out`; returns `out`. With `only_splits` (e.g.
    ("test",)) only the cases of those splits are written: each case is seeded on its own and the
    splits are drawn over the whole plan, so they are the very volumes the full dataset holds."""
    import pandas as pd
    from tqdm import tqdm

    out = Path(out)
    prepare_out_dir(out, force)
    plans = plan_dataset(cfg)
    splits = assign_splits(plans, cfg)
    if only_splits:
        unknown = set(only_splits) - {"train", "valid", "test"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}: choose from train, valid, test")
        plans = [p for p in plans if splits[p.name] in only_splits]
    args = [(p, str(out), cfg.scale, cfg.store_hu) for p in plans]
    bar = tqdm(total=len(plans), desc="synth", unit="vol", disable=not progress)
    results = []
    if cfg.workers == 1:
        for a in args:
            results.append(make_volume(*a))
            bar.update()
    else:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
            for r in pool.map(_make_volume_star, args):
                results.append(r)
                bar.update()
    bar.close()
    names = list(ct_rate().names)
    pd.DataFrame([r["report"] for r in results]).to_csv(out / "reports.csv", index=False)
    pd.DataFrame([r["labels"] for r in results], columns=["VolumeName", *names]).to_csv(out / "labels.csv", index=False)
    pd.DataFrame([r["meta"] for r in results]).to_csv(out / "metadata.csv", index=False)
    pd.DataFrame({"VolumeName": [p.name for p in plans], "split": [splits[p.name] for p in plans]}).to_csv(
        out / "splits.csv", index=False)
    truth = {
        "generator": "rad3d synth", "version": GENERATOR_VERSION, "seed": cfg.seed, "scale": cfg.scale,
        "store_hu": cfg.store_hu, "n_planned": cfg.n,
        "splits_written": sorted(set(only_splits or ("train", "valid", "test"))), "prevalence": cfg.prevalence, "normal_fraction": cfg.normal_fraction,
        "coordinates": "center_mm: mm from the centre of voxel (0,0,0) along the volume axes (L, P, S); "
                       "center_voxel: voxel index",
        "cases": {p.name: r["truth"] for p, r in zip(plans, results)},
    }
    (out / "phantom_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return out


def _make_volume_star(a):
    return make_volume(*a)
