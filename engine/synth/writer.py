"""Writing a phantom dataset in CT-RATE's format, in one of two layouts.

flat (default):
    DIR/volumes/<split>_<p>/<split>_<p>_<scan>/<split>_<p>_<scan>_<recon>.nii.gz   int16, HU + 1024
    DIR/reports.csv, labels.csv, metadata.csv, splits.csv, phantom_truth.json
    DIR/vqa.csv   questions about each volume from its truth (engine.synth.vqa; columns in engine.vqa)
    Names follow CT-RATE's scheme with the case's own split (train, valid, test) as the prefix, so that
    a held-out case never reads as training data; patient numbers are unique over all splits. The
    split itself lives in splits.csv.
ctrate (CT-RATE's released tree, names and columns as released; engine.data.layout):
    DIR/dataset/train/train_<p>/train_<p>_<s>/train_<p>_<s>_<r>.nii.gz, DIR/dataset/valid/valid_<p>/...
    DIR/dataset/radiology_text_reports/{train_reports,validation_reports}.csv
    DIR/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    DIR/dataset/metadata/{train,validation}_metadata.csv   every column of CT-RATE's metadata
    DIR/dataset/phantom_truth.json, DIR/dataset/vqa.csv
    The patients the flat layout puts in test are CT-RATE's valid (our test); the others are its
    train, numbered per split as CT-RATE numbers them. Files store raw values, HU - RescaleIntercept
    with an intercept of -1024 or -8192 per scan (both occur in CT-RATE), as its first release did.
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
from engine.synth.config import GENERATOR_VERSION, SynthConfig
from engine.synth.domains import DEFAULT_DOMAIN, domain_label_set

LAYOUTS = ("flat", "ctrate")
OUR_FILES = ("reports.csv", "labels.csv", "metadata.csv", "splits.csv", "phantom_truth.json", "vqa.csv")
RELEASE_DIR = "dataset"
# CT-RATE's released CSV names per its split (engine.data.layout reads the same names).
CTRATE_CSVS = {
    "reports": ("radiology_text_reports", {"train": "train_reports.csv", "valid": "validation_reports.csv"}),
    "labels": ("multi_abnormality_labels", {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"}),
    "meta": ("metadata", {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}),
}
# The columns of CT-RATE's metadata CSVs, in their order (validation_metadata.csv as released).
CTRATE_METADATA_COLUMNS = (
    "VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex", "PatientAge",
    "ReconstructionDiameter", "DistanceSourceToDetector", "DistanceSourceToPatient", "GantryDetectorTilt",
    "TableHeight", "RotationDirection", "ExposureTime", "XRayTubeCurrent", "Exposure", "FilterType",
    "GeneratorPower", "FocalSpots", "ConvolutionKernel", "PatientPosition", "RevolutionTime",
    "SingleCollimationWidth", "TotalCollimationWidth", "TableSpeed", "TableFeedPerRotation", "SpiralPitchFactor",
    "DataCollectionCenterPatient", "ReconstructionTargetCenterPatient", "ExposureModulationType", "CTDIvol",
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "XYSpacing", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "NumberofSlices", "ZSpacing", "StudyDate",
)
CTRATE_INTERCEPTS = (-1024, -8192)
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
    names = domain_label_set(cfg.domain).names
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


def volume_path(root: Path, name: str, layout: str = "flat") -> Path:
    """flat: DIR/volumes/train_1/train_1_a/<name>; ctrate: DIR/dataset/<split>/<split>_1/<split>_1_a/<name>."""
    stem = name.removesuffix(".nii.gz")
    parts = stem.split("_")
    base = root / "volumes" if layout == "flat" else root / RELEASE_DIR / parts[0]
    return base / "_".join(parts[:2]) / "_".join(parts[:3]) / name


def ctrate_names(plans: list[VolumePlan], splits: dict[str, str]) -> dict[str, str]:
    """Flat name → CT-RATE release name: our test patients become CT-RATE's valid, the others its
    train, each numbered 1, 2, ... in patient order within its split, as CT-RATE numbers them."""
    numbers: dict[tuple[str, int], int] = {}
    out = {}
    for plan in sorted(plans, key=lambda p: (p.patient, p.scan, p.recon)):
        release = "valid" if splits[plan.name] == "test" else "train"
        key = (release, plan.patient)
        if key not in numbers:
            numbers[key] = 1 + sum(1 for r, _ in numbers if r == release)
        out[plan.name] = f"{release}_{numbers[key]}_{plan.scan}_{plan.recon}.nii.gz"
    return out


def flat_names(plans: list[VolumePlan], splits: dict[str, str]) -> dict[str, str]:
    """Plan name → flat-layout name: the split in place of the plan's "train" prefix (test_12_a_1)."""
    return {p.name: f"{splits[p.name]}_{p.name.split('_', 1)[1]}" for p in plans}


def nifti_affine(spacing, origin) -> np.ndarray:
    """Voxel axes run to patient Left, Posterior, Superior; nibabel's world is RAS, so the
    first two axes get negative steps (aff2axcodes → ('L', 'P', 'S'))."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return aff


def save_nifti(path: Path, hu: np.ndarray, spacing, origin, store_hu: bool, intercept: int = -1024) -> None:
    """int16 HU (store_hu) or raw values HU - intercept, the header saying slope 1, intercept 0."""
    import nibabel as nib

    offset = 0 if store_hu else -intercept
    raw = np.rint(hu) + offset
    if raw.min() < np.iinfo(np.int16).min or raw.max() > np.iinfo(np.int16).max:
        raise ValueError(f"raw values with intercept {intercept} do not fit int16")
    raw = raw.astype(np.int16)
    img = nib.Nifti1Image(raw, nifti_affine(spacing, origin))
    img.header.set_data_dtype(np.int16)
    img.header.set_xyzt_units("mm")
    data = bytearray(img.to_bytes())
    # nibabel writes "no scaling" as NaN; CT-RATE's files say slope 1, intercept 0 explicitly.
    data[112:120] = np.array([1.0, 0.0], dtype="<f4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the files byte-identical for the same seed.
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1, mtime=0))


def make_volume(plan: VolumePlan, root: str, scale: float, store_hu: bool, layout: str = "flat",
                name: str | None = None, domain: str = DEFAULT_DOMAIN) -> dict:
    """Generate and write one volume (as `name`, default the plan's); return its CSV rows and truth."""
    from engine.synth.case import generate_case

    name = name or plan.name
    case = generate_case(plan.scan_seed, plan.findings, scale, patient_seed=plan.patient_seed,
                         recon_seed=plan.recon_seed, domain=domain)
    intercept = 0 if store_hu else -1024
    if layout == "ctrate" and not store_hu:
        intercept = CTRATE_INTERCEPTS[int(np.random.default_rng([plan.scan_seed, 11]).integers(len(CTRATE_INTERCEPTS)))]
    save_nifti(volume_path(Path(root), name, layout), case.hu, case.spacing, case.grid.origin, store_hu, intercept)
    prng = np.random.default_rng([plan.patient_seed, 9])
    sex = "M" if prng.random() < 0.55 else "F"
    age = int(prng.integers(25, 86))
    maker, model = MANUFACTURERS[int(np.random.default_rng([plan.scan_seed, 9]).integers(len(MANUFACTURERS)))]
    sx, sy, sz = case.spacing
    nx, ny, nz = case.hu.shape
    meta = {
        "VolumeName": name, "Manufacturer": maker, "ManufacturerModelName": model, "PatientSex": sex,
        "PatientAge": f"{age:03d}Y", "PatientPosition": "HFS", "Rows": ny, "Columns": nx, "NumberofSlices": nz,
        "ReconstructionDiameter": round(nx * sx, 1), "SliceThickness": sz, "XYSpacing": f"[{sx}, {sy}]",
        "ZSpacing": sz, "RescaleIntercept": intercept, "RescaleSlope": 1, "RescaleType": "HU",
    }
    if layout == "ctrate":  # CT-RATE's columns, in its order; what a phantom has no value for stays blank
        meta.pop("SliceThickness")
        meta.update({"SeriesDescription": "CHEST", "GantryDetectorTilt": 0, "RotationDirection": "CW",
                     "ConvolutionKernel": "B", "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
                     "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]", "RescaleType": "",
                     "StudyDate": 20200101 + int(np.random.default_rng([plan.scan_seed, 10]).integers(28))})
        meta = {c: meta.get(c, "") for c in CTRATE_METADATA_COLUMNS}
    report = {"VolumeName": name, "ClinicalInformation_EN": case.report.clinical,
              "Technique_EN": case.report.technique, "Findings_EN": case.report.findings,
              "Impressions_EN": case.report.impressions}
    labels = {"VolumeName": name, **case.labels}
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
        # Remove only what a previous `rad3d synth` wrote (in either layout).
        if (out / "volumes").is_dir():
            shutil.rmtree(out / "volumes")
        for f in OUR_FILES:
            (out / f).unlink(missing_ok=True)
        release = out / RELEASE_DIR
        for folder in ("train", "valid", *(d for d, _ in CTRATE_CSVS.values())):
            if (release / folder).is_dir():
                shutil.rmtree(release / folder)
        (release / "phantom_truth.json").unlink(missing_ok=True)
        (release / "vqa.csv").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_dataset(cfg: SynthConfig, out: str | Path, force: bool = False, progress: bool = True,
                  only_splits: tuple[str, ...] = (), layout: str = "flat", limit: int | None = None,
                  vqa: bool = True) -> Path:
    """Write `cfg.n` phantoms and their CSVs under `out` in `layout` (flat or ctrate); returns
    `out`. With `only_splits` (e.g. ("test",)) only the cases of those splits are written: each case
    is seeded on its own and the splits are drawn over the whole plan, so they are the very volumes
    the full dataset holds. In the ctrate layout the test split is CT-RATE's valid folder. `limit`:
    only the first that many of those cases (a quick preview of the very cases the full set holds).
    `vqa`: also write vqa.csv, questions from each case's truth (engine.synth.vqa), beside the truth."""
    import pandas as pd
    from tqdm import tqdm

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    if layout == "ctrate" and cfg.domain != DEFAULT_DOMAIN:
        raise ConfigError(f"the ctrate layout is CT-RATE's release; write the {cfg.domain} domain in the flat layout")
    out = Path(out)
    if only_splits:
        unknown = set(only_splits) - {"train", "valid", "test"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}: choose from train, valid, test")
        if layout == "ctrate" and "valid" in only_splits:
            raise ConfigError("in the ctrate layout our valid split is carved from CT-RATE's train when the dataset "
                              "is read: write train (CT-RATE's train folder) or test (its valid folder)")
    prepare_out_dir(out, force)
    plans = plan_dataset(cfg)
    splits = assign_splits(plans, cfg)
    names = ctrate_names(plans, splits) if layout == "ctrate" else flat_names(plans, splits)
    if only_splits:
        if layout == "ctrate":  # train: every patient of CT-RATE's train folder (our train and valid)
            plans = [p for p in plans if ("test" if splits[p.name] == "test" else "train") in only_splits]
        else:
            plans = [p for p in plans if splits[p.name] in only_splits]
    plans = plans[:limit] if limit is not None else plans
    args = [(p, str(out), cfg.scale, cfg.store_hu, layout, names[p.name], cfg.domain) for p in plans]
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
    if layout == "ctrate":
        truth_dir = _write_ctrate_csvs(out, results)
    else:
        truth_dir = out
        labels = list(domain_label_set(cfg.domain).names)
        pd.DataFrame([r["report"] for r in results]).to_csv(out / "reports.csv", index=False)
        pd.DataFrame([r["labels"] for r in results], columns=["VolumeName", *labels]).to_csv(out / "labels.csv",
                                                                                             index=False)
        pd.DataFrame([r["meta"] for r in results]).to_csv(out / "metadata.csv", index=False)
        pd.DataFrame({"VolumeName": [names[p.name] for p in plans],
                      "split": [splits[p.name] for p in plans]}).to_csv(out / "splits.csv", index=False)
    truth = {
        "generator": "rad3d synth", "version": GENERATOR_VERSION, "seed": cfg.seed, "scale": cfg.scale,
        "store_hu": cfg.store_hu, "n_planned": cfg.n,
        "splits_written": sorted(set(only_splits or ("train", "valid", "test"))),
        "prevalence": cfg.prevalence, "normal_fraction": cfg.normal_fraction,
        "coordinates": "center_mm: mm from the centre of voxel (0,0,0) along the volume axes (L, P, S); "
                       "center_voxel: voxel index",
        "layout": layout,
        # Only a second domain is named, so the default domain's files stay as they were.
        **({"domain": cfg.domain, "label_set": domain_label_set(cfg.domain).name}
           if cfg.domain != DEFAULT_DOMAIN else {}),
        "cases": {names[p.name]: r["truth"] for p, r in zip(plans, results)},
    }
    (truth_dir / "phantom_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if vqa and cfg.domain == DEFAULT_DOMAIN:  # questions exist for the default domain's findings only
        from engine.synth.vqa import generate_vqa
        from engine.vqa import VQA_FILE, write_vqa_csv

        write_vqa_csv(generate_vqa(truth), truth_dir / VQA_FILE)
    return out


def _write_ctrate_csvs(out: Path, results: list[dict]) -> Path:
    """CT-RATE's per-split CSVs under OUT/dataset (only the splits written); returns that folder."""
    import pandas as pd

    release = out / RELEASE_DIR
    columns = {"reports": None, "labels": ["VolumeName", *domain_label_set().names], "meta": list(CTRATE_METADATA_COLUMNS)}
    for kind, (folder, files) in CTRATE_CSVS.items():
        for split, file in files.items():
            rows = [r[kind if kind != "reports" else "report"] for r in results
                    if r["report"]["VolumeName"].startswith(f"{split}_")]
            if not rows:
                continue
            (release / folder).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows, columns=columns[kind]).to_csv(release / folder / file, index=False)
    release.mkdir(parents=True, exist_ok=True)
    return release


def _make_volume_star(a):
    return make_volume(*a)
