"""`rad3d evidence VOLUME --run RUN --finding NAME`: where in the volume one finding's logit comes
from (a map on the volume's grid, its peak voxel); `rad3d evidence-check --data DIR --split test
--run RUN`: how often each method's peak lands inside the planted object on phantoms."""

from __future__ import annotations

import argparse
from pathlib import Path

METHOD_HELP = "gradient (gradient × input) or rollout (gradient-weighted attention rollout); default: gradient"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evidence", help="map where in a CT volume one finding's classifier logit comes from",
        description="Compute one finding's evidence map through the run's image model (cached per case) and print "
        "its peak voxel; --out writes the map on the volume's voxel grid as NIfTI.")
    p.add_argument("volume", help="a .nii/.nii.gz, .mha/.mhd or .nrrd/.nhdr file, a DICOM series folder or a .zip of one")
    p.add_argument("--run", required=True, help="run directory or image-model folder")
    p.add_argument("--finding", required=True, help="finding name, e.g. 'Pleural effusion'")
    p.add_argument("--method", default=None, help=METHOD_HELP)
    p.add_argument("--rescale", nargs=2, type=float, metavar=("SLOPE", "INTERCEPT"),
                   help="HU = SLOPE * stored + INTERCEPT (CT-RATE's metadata values); voxels used as stored")
    p.add_argument("--out", help="write the map (float32, 0..1) as NIfTI on the volume's grid")
    p.add_argument("--cache", help="cache folder (default: RAD3D_HOME/evidence)")
    p.set_defaults(handler=run_evidence)

    c = subparsers.add_parser(
        "evidence-check", help="hit rate of evidence-map peaks inside planted objects on phantoms",
        description="For every finding planted in the phantoms of one split, compute its evidence map by each method "
        "and count how often the map's peak voxel lies inside the planted object (masks regenerated from the "
        "phantoms' seeds). Prints the hit rate per finding and method.")
    c.add_argument("--data", required=True, help="phantom folder written by `rad3d synth` (with phantom_truth.json)")
    c.add_argument("--split", default="test", help="train, valid or test (default test)")
    c.add_argument("--run", required=True, help="run directory or image-model folder")
    c.add_argument("--methods", default="gradient,rollout", help="comma-separated methods (default both)")
    c.add_argument("--limit", type=int, default=None, help="only the first N cases of the split")
    c.add_argument("--results", help="JSON-lines file of per-finding hits; cases already in it are skipped (resume)")
    c.add_argument("--json", action="store_true", help="print the table as JSON")
    c.set_defaults(handler=run_check)


def _methods(text: str) -> list[str]:
    from engine.errors import ConfigError
    from engine.evidence import METHODS

    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"unknown evidence method {bad[0] if bad else text!r} (use {', '.join(METHODS)})")
    return methods


def _save_map(path: Path, volume, volume_map) -> None:
    import nibabel as nib
    import numpy as np

    sx, sy, sz = volume.spacing_mm
    affine = np.diag([-sx, -sy, sz, 1.0])  # rad3d's voxel order is L, P, S; NIfTI's world is RAS
    src = Path(str(volume.source))
    if volume.meta.get("header_axcodes") == "LPS" and src.suffix in (".nii", ".gz") and src.is_file():
        affine = nib.load(str(src)).affine  # stored in this order: keep the file's own placement
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume_map.astype(np.float32), affine), str(path))


def _check_finding(run: str, finding: str) -> None:
    """An unknown finding is refused from the run's config alone, before any weights load."""
    from engine.errors import ConfigError
    from engine.rundir import load_image_model

    names = list(load_image_model(run)[1].label_set.names)
    if finding not in names:
        raise ConfigError(f"unknown finding {finding!r} (this run's image model knows: {', '.join(names)})", run)


def run_evidence(args: argparse.Namespace) -> int:
    from engine.evidence import DEFAULT_METHOD, METHODS
    from engine.home import rad3d_home
    from engine.io import load_volume

    method = _methods(args.method or DEFAULT_METHOD)[0]
    volume = (load_volume(args.volume, rescale=tuple(args.rescale), reorient=False) if args.rescale
              else load_volume(args.volume))  # a bad file is refused before any model loads
    _check_finding(args.run, args.finding)
    from tqdm import tqdm

    from engine.evidence_cache import EvidenceCache, evidence_for
    from engine.image_model import open_image_model

    with tqdm(total=2, desc="evidence", unit="step") as bar:
        bar.set_postfix_str("loading the image model")
        model = open_image_model(args.run)
        bar.update()
        bar.set_postfix_str(f"{method} map of {args.finding}")
        cache = EvidenceCache(args.cache or rad3d_home() / "evidence")
        overlay = evidence_for(model, volume, args.finding, cache, method)
        bar.update()
    x, y, z = overlay.peak
    print(f"{args.finding} ({method}; methods: {', '.join(METHODS)}): logit {overlay.logit:.3f}, "
          f"peak voxel (x={x}, y={y}, z={z}) = axial slice {z}; {'computed' if cache.computed else 'from the cache'}")
    if args.out:
        _save_map(Path(args.out), volume, overlay.volume_map)
        print(f"map written to {args.out}")
    return 0


def _table_lines(rows: list[dict], methods: list[str]) -> list[str]:
    width = max(len(r["finding"]) for r in rows)
    head = f"{'finding':<{width}}  cases  " + "  ".join(f"{m:>9}" for m in methods) + "  chance"
    lines = [head]
    for r in rows:
        rates = "  ".join("        –" if r[m] is None else f"{r[m]:9.2f}" for m in methods)
        chance = "     –" if r["chance"] is None else f"{r['chance']:6.3f}"
        lines.append(f"{r['finding']:<{width}}  {r['cases']:5d}  {rates}  {chance}")
    return lines


def run_check(args: argparse.Namespace) -> int:
    import json

    from engine.data.ctrate import CTRateDataset
    from engine.evidence_check import check_case, hit_table, load_hits, phantom_truth, save_hits

    methods = _methods(args.methods)
    truth = phantom_truth(args.data)  # not phantoms: refused before the model loads
    dataset = CTRateDataset.open(args.data)
    cases = [c for c in dataset.split(args.split) if c.volume_name in truth["cases"]][:args.limit]
    results = Path(args.results) if args.results else None
    hits = [h for h in load_hits(results) if h.method in methods] if results else []
    done = {h.volume for h in hits}
    from tqdm import tqdm

    from engine.image_model import open_image_model

    model = open_image_model(args.run)
    for case in tqdm(cases, desc=f"evidence-check {args.split}", unit="case"):
        if case.volume_name in done:
            continue
        new = check_case(model, dataset.load_volume(case), truth["cases"][case.volume_name], truth["scale"], methods)
        if results:
            save_hits(results, new)
        hits += new
    rows = hit_table([h for h in hits if h.volume in {c.volume_name for c in cases}], model.label_set.names, methods)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Peak of the evidence map inside the planted object ({args.split} split, {len(cases)} phantoms, "
          f"run {args.run}); chance = the object's mean share of the volume:")
    print("\n".join(_table_lines(rows, methods)))
    return 0
