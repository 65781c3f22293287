"""Provenance: what an artefact (embedding cache, image model, run) was made from, and the licence
terms that follow.

    data      every dataset that went into it: kind (phantoms / CT-RATE / other), name, version,
              fingerprint (a hash of the CSV files' contents and the volume files' names and sizes,
              not of the voxels: cheap, and it changes when a row or a file changes)
    encoder   the encoder weights file: name, sha256, origin (CT-CLIP, rad3d train-encoder, unknown), licence
    decoder   the language model: name, licence (from its folder's model card or config)

Each artefact carries its inputs' provenance forward (run <- image model <- cache / dataset), so a
run knows every dataset behind it. CT-RATE and CT-CLIP are CC BY-NC-SA 4.0: a run made from either
is non-commercial and share-alike. Artefacts written before provenance was recorded load with an
empty one, shown as "unknown".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import JsonConfig
from engine.data.layout import RELEASE_FILES
from engine.io import VOLUME_SUFFIXES

# -- licences ------------------------------------------------------------------------------------
PHANTOMS = "phantoms"
CT_RATE = "CT-RATE"
OTHER = "other"
DATA_KINDS = (PHANTOMS, CT_RATE, OTHER)
UNKNOWN = "unknown"
PROJECT_LICENCE = "Apache-2.0"  # rad3d's own licence (pyproject.toml): its code, phantoms and weights it trains
CC_BY_NC_SA = "CC BY-NC-SA 4.0"  # CT-RATE (data) and CT-CLIP (weights), per their dataset card


@dataclass(frozen=True)
class LicenceTerms:
    name: str  # display name
    commercial: bool
    share_alike: bool


# The few licences rad3d's inputs come under, keyed by their model-card identifier (lower case,
# spaces as "-"). A full SPDX parser would know more names but not these terms, which are what
# the one-line statement needs; anything else is shown as written and counted as unknown terms.
KNOWN_LICENCES = {
    "apache-2.0": LicenceTerms("Apache-2.0", True, False),
    "mit": LicenceTerms("MIT", True, False),
    "cc-by-4.0": LicenceTerms("CC BY 4.0", True, False),
    "cc-by-sa-4.0": LicenceTerms("CC BY-SA 4.0", True, True),
    "cc-by-nc-4.0": LicenceTerms("CC BY-NC 4.0", False, False),
    "cc-by-nc-sa-4.0": LicenceTerms(CC_BY_NC_SA, False, True),
    "gemma": LicenceTerms("Gemma Terms of Use", True, False),
}


def licence_terms(licence: str | None) -> LicenceTerms | None:
    """The terms of a licence named as a model card or a person writes it ("apache-2.0",
    "CC BY-NC-SA 4.0"); None when unknown."""
    if not licence:
        return None
    return KNOWN_LICENCES.get(re.sub(r"[\s_]+", "-", str(licence).strip().lower()))


def licence_name(licence: str | None) -> str:
    """The display name of a licence ("cc-by-nc-sa-4.0" -> "CC BY-NC-SA 4.0"), or it as written."""
    terms = licence_terms(licence)
    return terms.name if terms else (str(licence).strip() if licence else UNKNOWN)


# -- the records -----------------------------------------------------------------------------------
# Records read leniently: keys a later rad3d may add are left out, so an older one still reads them.
@dataclass(frozen=True)
class DataSource(JsonConfig):
    _json_extra = "ignore"
    kind: str  # one of DATA_KINDS
    name: str
    version: str | None = None
    fingerprint: str | None = None  # dataset_fingerprint(); None where the files were not at hand
    licence: str = UNKNOWN

    def describe(self) -> str:
        if self.kind == PHANTOMS:
            return "synthetic phantoms (rad3d synth)"
        if self.kind == CT_RATE:
            return "CT-RATE (real chest CT)" + (f" {self.version}" if self.version else "")
        return self.name


@dataclass(frozen=True)
class EncoderRecord(JsonConfig):
    _json_extra = "ignore"
    file: str  # the weights file's name
    sha256: str | None
    origin: str = UNKNOWN  # "CT-CLIP", "rad3d train-encoder" or unknown
    licence: str = UNKNOWN


@dataclass(frozen=True)
class DecoderRecord(JsonConfig):
    _json_extra = "ignore"
    name: str
    licence: str = UNKNOWN


@dataclass(frozen=True)
class Provenance(JsonConfig):
    data: tuple[DataSource, ...] = ()
    encoder: EncoderRecord | None = None
    decoder: DecoderRecord | None = None

    # -- JSON ----------------------------------------------------------------------------------
    # The derived one-line statements are written for readers of the JSON; they are recomputed,
    # not read back.
    _json_ignore = frozenset({"trained_on", "licence", "commercial_use", "share_alike"})

    def _json_out(self, data: dict) -> dict:
        terms = self.terms()
        return {**data, "trained_on": self.trained_on(), "licence": self.licence_statement(),
                "commercial_use": terms["commercial_use"], "share_alike": terms["share_alike"]}

    @classmethod
    def _json_in(cls, data) -> dict:
        """None or {} (an artefact older than provenance) gives the empty one."""
        if not data:
            return {}
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k == "data" and v is None) and not (k != "data" and not v)}
        return data

    # -- combining -----------------------------------------------------------------------------
    def merged(self, other: Provenance | None = None, *, data: DataSource | None = None,
               encoder: EncoderRecord | None = None, decoder: DecoderRecord | None = None) -> Provenance:
        """This provenance carried forward: `other`'s datasets added (each once), and encoder or
        decoder set where given (else kept, else taken from `other`)."""
        sources = list(self.data)
        for d in (*(other.data if other else ()), *((data,) if data else ())):
            if d not in sources:
                sources.append(d)
        return Provenance(
            data=tuple(sources),
            encoder=encoder or self.encoder or (other.encoder if other else None),
            decoder=decoder or self.decoder or (other.decoder if other else None),
        )

    # -- what it says --------------------------------------------------------------------------
    @property
    def known(self) -> bool:
        return bool(self.data)

    @property
    def synthetic_only(self) -> bool:
        """Every dataset behind it is phantoms: its drafts of real scans mean nothing."""
        return bool(self.data) and all(d.kind == PHANTOMS for d in self.data)

    def trained_on(self) -> str:
        if not self.data:
            return "unknown (no provenance recorded)"
        parts = list(dict.fromkeys(d.describe() for d in self.data))
        text = ", ".join(parts)
        if self.synthetic_only:
            text += " — not real CT"
        if self.encoder and self.encoder.origin == "CT-CLIP":
            text += "; encoder CT-CLIP (pretrained on CT-RATE)"
        return text

    def components(self) -> list[tuple[str, str]]:
        """(what, licence) of each part: 'data CT-RATE', 'encoder CT-CLIP', 'decoder SmolLM2'."""
        parts = [(f"data {d.describe()}", d.licence) for d in self.data]
        if self.encoder:
            parts.append((f"encoder {self.encoder.origin if self.encoder.origin != UNKNOWN else self.encoder.file}",
                          self.encoder.licence))
        if self.decoder:
            parts.append((f"decoder {self.decoder.name}", self.decoder.licence))
        return parts

    def terms(self) -> dict:
        """commercial_use / share_alike: False / True when any part says so, None when a part's
        licence is unknown and none restricts."""
        known = [licence_terms(lic) for _, lic in self.components()]
        if not known:
            return {"commercial_use": None, "share_alike": None}
        restrict = any(t is not None and not t.commercial for t in known)
        share = any(t is not None and t.share_alike for t in known)
        unsure = any(t is None for t in known)
        return {"commercial_use": False if restrict else (None if unsure else True),
                "share_alike": True if share else (None if unsure else False)}

    def licence_statement(self) -> str:
        """One line: the terms that follow, then which licence covers which part."""
        parts = self.components()
        if not parts:
            return "unknown (no provenance recorded)"
        by_licence: dict[str, list[str]] = {}
        for what, lic in parts:
            by_licence.setdefault(licence_name(lic), []).append(what)
        terms = self.terms()
        said = []
        if terms["commercial_use"] is False:
            said.append("non-commercial use only")
        if terms["share_alike"] is True:
            said.append("share-alike (derivatives under the same licence)")
        unknown = [what for what, lic in parts if licence_terms(lic) is None]
        if unknown:
            said.append(f"unknown for {', '.join(unknown)}: check before use")
        if not said:
            said.append("commercial use allowed")
        detail = "; ".join(f"{lic}: {', '.join(whats)}" for lic, whats in by_licence.items() if licence_terms(lic))
        return ", ".join(said) + (f" — {detail}" if detail else "")

    def warning(self) -> str | None:
        """A warning for anyone reading a draft, or None."""
        if self.synthetic_only:
            return ("Trained on synthetic phantoms only, not on real CT: a draft of a real scan from this "
                    "model is not a reading of it.")
        if not self.data:
            return "What this model was trained on was not recorded."
        return None

    def lines(self) -> list[str]:
        """The provenance as the CLI and the report card print it."""
        out = [f"Trained on: {self.trained_on()}", f"Licence: {self.licence_statement()}"]
        if (w := self.warning()) is not None:
            out.append(f"Warning: {w}")
        return out


# -- hashing files ---------------------------------------------------------------------------------
PERSIST_BYTES = 32 << 20  # files at least this large have their hash kept on disk between processes
HASHES_FILE = "file_hashes.json"
_memo: dict[tuple[str, int, int], str] = {}


def sha256_of_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks, never remembered (for integrity checks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _store_path() -> Path:
    from engine.home import rad3d_home

    return rad3d_home() / HASHES_FILE


def _read_store() -> dict:
    try:
        return json.loads(_store_path().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, hashed in chunks once per (path, size, mtime): remembered in this process,
    and for big files (a 1.7 GB CT-CLIP checkpoint) also in $RAD3D_HOME/file_hashes.json."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    big = st.st_size >= PERSIST_BYTES
    stored = _read_store().get(key[0]) if big else None
    if stored and stored.get("size") == st.st_size and stored.get("mtime_ns") == st.st_mtime_ns:
        digest = stored["sha256"]
    else:
        digest = sha256_of_file(path)
        if big:
            _remember(key[0], {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    _memo[key] = digest
    return digest


def _remember(path: str, entry: dict) -> None:
    """Add one hash to the store (written whole and renamed, so a reader never sees half a file;
    a lost race loses a cache entry, never a wrong hash, since entries are checked on size and mtime)."""
    store_path = _store_path()
    try:
        store_path.parent.mkdir(parents=True, exist_ok=True)
        store = _read_store()
        store[path] = entry
        tmp = store_path.with_name(f"{store_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(store, indent=1))
        os.replace(tmp, store_path)
    except OSError:
        pass  # a read-only home only costs hashing again


# -- describing inputs -----------------------------------------------------------------------------
# CT-RATE as released: these file names (under radiology_text_reports/, multi_abnormality_labels/,
# metadata/) and volume names train_<patient>_<scan>_<reconstruction> / valid_...
CT_RATE_CSVS = frozenset(n for kind in RELEASE_FILES.values() for names in kind.values() for n in names)
CT_RATE_VOLUME = re.compile(r"^(train|valid)_\d+_[a-z]+_\d+\.(nii\.gz|nii|mha|nrrd)$")
PHANTOM_TRUTH = "phantom_truth.json"


def _dataset_files(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(CSV files, (volume file, size)) under root as sorted relative POSIX paths; hidden folders
    and files are left out."""
    csvs, volumes = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            full = Path(folder) / name
            rel = full.relative_to(root).as_posix()
            lower = name.lower()
            if lower.endswith(".csv"):
                csvs.append(rel)
            elif lower.endswith(VOLUME_SUFFIXES):
                volumes.append((rel, full.stat().st_size))
    return sorted(csvs), sorted(volumes)


def dataset_fingerprint(root: str | Path, files=None) -> str:
    """16 hex digits of sha256 over every CSV file's path and contents and every volume file's path
    and size under root. It does not move with the folder and does not read voxels."""
    root = Path(root)
    csvs, volumes = files or _dataset_files(root)
    digest = hashlib.sha256()
    for rel in csvs:
        digest.update(f"csv\t{rel}\t{file_sha256(root / rel)}\n".encode())
    for rel, size in volumes:
        digest.update(f"volume\t{rel}\t{size}\n".encode())
    return digest.hexdigest()[:16]


def describe_dataset(root) -> DataSource:
    """What a dataset folder is, from its contents: rad3d phantoms (phantom_truth.json), CT-RATE
    (its released file names or volume names), or other (its folder name, and the licence of its
    README's front matter when it has one). `root` may be an engine.data.DataSource or its JSON."""
    root = Path(root["root"] if isinstance(root, dict) else os.fspath(root)).resolve()
    files = _dataset_files(root)
    csvs, volumes = files
    fingerprint = dataset_fingerprint(root, files)
    truth = _phantom_truth(root)
    if truth is not None:
        return phantom_source(truth.get("version"), truth.get("seed"), truth.get("n_planned"), truth.get("scale"),
                              fingerprint)
    names = [Path(rel).name for rel, _ in volumes]
    if any(Path(rel).name in CT_RATE_CSVS for rel in csvs) or (names and all(CT_RATE_VOLUME.match(n) for n in names)):
        return DataSource(CT_RATE, CT_RATE, None, fingerprint, CC_BY_NC_SA)
    return DataSource(OTHER, root.name, None, fingerprint, card_licence(root) or UNKNOWN)


def phantom_source(version, seed, cases, scale, fingerprint: str | None = None) -> DataSource:
    """A `rad3d synth` dataset (the project's own, Apache-2.0), named by its generator settings."""
    detail = ", ".join(text for value, text in ((seed, f"seed {seed}"), (cases, f"{cases} cases"),
                                                (scale, f"scale {scale}")) if value is not None)
    return DataSource(PHANTOMS, "rad3d synth phantoms" + (f" ({detail})" if detail else ""),
                      None if version is None else str(version), fingerprint, PROJECT_LICENCE)


def _phantom_truth(root: Path) -> dict | None:
    for folder in (root, root / "dataset"):
        try:
            truth = json.loads((folder / PHANTOM_TRUTH).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(truth, dict) and truth.get("generator") == "rad3d synth":
            return truth
    return None


def card_licence(folder: str | Path) -> str | None:
    """The `license:` of a folder's README.md front matter (a Hugging Face model or dataset card),
    else of its config.json, else None."""
    folder = Path(folder)
    readme = folder / "README.md"
    if readme.is_file():
        from huggingface_hub.repocard import metadata_load

        try:
            meta = metadata_load(readme) or {}
        except Exception:  # a broken card (bad YAML raises yaml's own errors) states no licence
            meta = {}
        if meta.get("license"):
            return str(meta["license"])
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("license") if isinstance(config, dict) else None
    return str(value) if value else None


CT_CLIP_NAME = re.compile(r"ct[-_ ]?clip|vocabfine|lipro", re.IGNORECASE)


def describe_encoder(weights: str | Path, *, origin: str | None = None, licence: str | None = None) -> EncoderRecord:
    """An encoder weights file with its sha256. A CT-CLIP checkpoint is recognised by its released
    names (CT-CLIP_v2.pt, CT_VocabFine_v2.pt, CT_LiPro_v2.pt): CC BY-NC-SA 4.0."""
    path = Path(weights)
    if origin is None and CT_CLIP_NAME.search(path.name):
        origin, licence = "CT-CLIP", licence or CC_BY_NC_SA
    return EncoderRecord(path.name, file_sha256(path) if path.is_file() else None, origin or UNKNOWN,
                         licence or UNKNOWN)


def describe_decoder(path: str | Path, *, gguf_file: str | None = None) -> DecoderRecord:
    """A local language-model folder: its name and the licence its model card or config states."""
    path = Path(path)
    name = gguf_file or path.name
    return DecoderRecord(name, card_licence(path) or UNKNOWN)
