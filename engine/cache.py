"""The embedding cache: each volume's frozen-encoder latent (and, once a classifier is trained,
its 18 logits), computed once and keyed by `VolumeName`.

Layout (a folder, so a crash loses at most the volume in flight):
    CACHE/manifest.json                 encoder identity, preprocessing fingerprint, label set,
                                        provenance (datasets embedded, encoder weights)
    CACHE/entries/<VolumeName>.safetensors   {"latent": (d,), optionally "logits": (n_labels,)}
Every entry is written to a temporary file and renamed into place, so a file that exists is whole;
so processes that share the work (`rad3d embed` under `accelerate launch`) write into one cache
safely, each its own volumes, and a rerun finds what is done by the files that exist.
A cache made with other settings (another encoder or preprocessing) is refused by name.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from engine.config import JsonConfig
from engine.errors import ConfigError
from engine.provenance import Provenance

MANIFEST = "manifest.json"
ENTRIES = "entries"


@dataclass(frozen=True)
class CacheIdentity(JsonConfig):
    """What the cached numbers depend on; two caches with different identities never mix."""

    encoder: str  # encoder name + config fingerprint + weights fingerprint
    preprocess: str  # PreprocessConfig.fingerprint()
    latent_dim: int
    label_set: str | None = None  # set once logits are written
    classifier: str | None = None  # fingerprint of the classifier that wrote the logits


@dataclass
class CacheEntry:
    latent: np.ndarray
    logits: np.ndarray | None = None


@dataclass
class EmbeddingCache:
    root: Path
    identity: CacheIdentity
    extra: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)  # empty: a cache older than provenance

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, root: str | Path, identity: CacheIdentity,
                       provenance: Provenance | None = None) -> EmbeddingCache:
        """Open CACHE made with the same identity, or start a new one. A cache made with other
        settings is refused, naming what differs, rather than silently mixed. `provenance` (what is
        being embedded) is recorded; a dataset added to an existing cache joins its provenance."""
        root = Path(root)
        if (root / MANIFEST).is_file():
            cache = cls.open(root)
            theirs, ours = asdict(cache.identity), asdict(identity)
            differ = [k for k in ("encoder", "preprocess", "latent_dim") if theirs[k] != ours[k]]
            if differ:
                detail = ", ".join(f"{k}: cache has {theirs[k]!r}, asked {ours[k]!r}" for k in differ)
                raise ConfigError(f"embedding cache was made with other settings ({detail})", root / MANIFEST)
            if provenance is not None:
                cache.record_provenance(provenance)
            return cache
        if root.exists() and any(root.iterdir()):
            raise ConfigError("folder exists and is not an embedding cache (no manifest.json)", root)
        (root / ENTRIES).mkdir(parents=True, exist_ok=True)
        cache = cls(root, identity, provenance=provenance or Provenance())
        cache._write_manifest()
        return cache

    @classmethod
    def open(cls, root: str | Path) -> EmbeddingCache:
        root = Path(root)
        path = root / MANIFEST
        try:
            data = json.loads(path.read_text())
            identity = CacheIdentity.from_dict(data["identity"], path)
            provenance = Provenance.from_dict(data.get("provenance"), path)
        except FileNotFoundError:
            raise ConfigError("not an embedding cache (manifest.json missing)", root) from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"unreadable cache manifest ({err})", path) from None
        return cls(root, identity, data.get("extra", {}), provenance)

    def _write_manifest(self) -> None:
        _atomic_write_text(self.root / MANIFEST, json.dumps({"identity": asdict(self.identity), "extra": self.extra,
                                                             "provenance": self.provenance.to_dict()}, indent=1))

    def record_provenance(self, provenance: Provenance) -> None:
        """Join `provenance` (e.g. another dataset embedded into this cache) to the recorded one."""
        joined = self.provenance.merged(provenance)
        if joined != self.provenance:
            self.provenance = joined
            self._write_manifest()

    # -- entries ---------------------------------------------------------------------------
    def _entry_path(self, volume_name: str) -> Path:
        if "/" in volume_name or "\\" in volume_name or volume_name in ("", ".", ".."):
            raise ConfigError(f"not a valid VolumeName for the cache: {volume_name!r}", self.root)
        return self.root / ENTRIES / f"{volume_name}.safetensors"

    def __contains__(self, volume_name: str) -> bool:
        return self._entry_path(volume_name).is_file()

    def names(self) -> list[str]:
        return sorted(p.name[: -len(".safetensors")] for p in (self.root / ENTRIES).glob("*.safetensors"))

    def __len__(self) -> int:
        return len(self.names())

    def put(self, volume_name: str, latent: np.ndarray, logits: np.ndarray | None = None) -> None:
        latent = np.asarray(latent, dtype=np.float32).reshape(-1)
        if latent.shape[0] != self.identity.latent_dim:
            raise ConfigError(f"latent of size {latent.shape[0]} for {volume_name}, "
                              f"cache holds {self.identity.latent_dim}", self.root)
        if not np.isfinite(latent).all():
            raise ConfigError(f"non-finite latent for {volume_name}; not cached", self.root)
        tensors = {"latent": latent}
        if logits is not None:
            tensors["logits"] = np.asarray(logits, dtype=np.float32).reshape(-1)
        path = self._entry_path(volume_name)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique: two writers never share one
        save_file(tensors, str(tmp))
        os.replace(tmp, path)

    def get(self, volume_name: str) -> CacheEntry:
        path = self._entry_path(volume_name)
        if not path.is_file():
            raise ConfigError(f"embedding cache has no entry for {volume_name}", self.root)
        data = load_file(str(path))
        return CacheEntry(latent=data["latent"], logits=data.get("logits"))

    def require(self, volume_names: list[str]) -> None:
        """Raise one error naming every requested case the cache lacks."""
        missing = [n for n in volume_names if n not in self]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ConfigError(f"embedding cache lacks {len(missing)} requested case(s): {shown}", self.root)

    def stack(self, volume_names: list[str], *, with_logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Latents (N, d) and, if asked, logits (N, n_labels) in the order given."""
        self.require(volume_names)
        entries = [self.get(n) for n in volume_names]
        latents = np.stack([e.latent for e in entries])
        if not with_logits:
            return latents, None
        lacking = [n for n, e in zip(volume_names, entries) if e.logits is None]
        if lacking:
            raise ConfigError(
                f"{len(lacking)} cache entries have no classifier logits (first: {lacking[0]}); "
                "run `rad3d train-classifier` first",
                self.root,
            )
        return latents, np.stack([e.logits for e in entries])

    def set_logits(self, logits_by_name: dict[str, np.ndarray], *, label_set: str, classifier: str) -> None:
        """Add (or replace) classifier logits for existing entries and record who wrote them."""
        for name, logits in logits_by_name.items():
            self.put(name, self.get(name).latent, logits)
        self.record_classifier(label_set=label_set, classifier=classifier)

    def record_classifier(self, *, label_set: str, classifier: str) -> None:
        """Record in the manifest which classifier (and label set) wrote the cached logits."""
        self.identity = CacheIdentity(**{**asdict(self.identity), "label_set": label_set, "classifier": classifier})
        self._write_manifest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
