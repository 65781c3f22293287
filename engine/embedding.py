"""Filling the embedding cache: each volume is read, preprocessed and encoded once (the encoder and
the classifier are frozen). Volumes are read and preprocessed in DataLoader worker processes while
the main process encodes; a rerun skips cached volumes, and a crash loses at most the volumes in
flight because every entry is written atomically."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from engine.cache import CacheIdentity, EmbeddingCache
from engine.errors import Rad3dError
from engine.preprocess import PreprocessConfig, preprocess


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a weights file (first 16 hex digits): the cache records which weights made it.
    (Hashed once per file version: see engine.provenance.file_sha256.)"""
    from engine.provenance import file_sha256

    return file_sha256(path)[:16]


def encoder_identity(name: str, config_dict: dict, weights_path: str | Path) -> str:
    config_hash = hashlib.sha256(repr(sorted(config_dict.items())).encode()).hexdigest()[:12]
    return f"{name}:{config_hash}:{file_fingerprint(weights_path)}"


class PreprocessedVolumes(Dataset):
    """Worker-side reading and preprocessing of named volumes, giving (name, tensor, error); a
    failure comes back as a message, not an exception, so one bad volume does not stop the others."""

    def __init__(self, dataset, names: list[str], config: PreprocessConfig):
        self.dataset, self.names, self.config = dataset, names, config

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        name = self.names[i]
        try:
            return name, preprocess(self.dataset.load_volume(name), self.config), None
        except Rad3dError as err:
            return name, None, str(err)


@dataclass
class EmbedSummary:
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


@torch.no_grad()
def embed_dataset(
    dataset,
    names: list[str],
    encoder: torch.nn.Module,
    preprocess_config: PreprocessConfig,
    cache: EmbeddingCache,
    *,
    classifier: torch.nn.Module | None = None,
    workers: int = 2,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EmbedSummary:
    from tqdm.auto import tqdm

    summary = EmbedSummary()
    todo = [n for n in names if n not in cache]
    summary.skipped = len(names) - len(todo)
    if not todo:
        return summary
    loader = DataLoader(
        PreprocessedVolumes(dataset, todo, preprocess_config),
        batch_size=None,  # one volume at a time: full-size volumes are ~220 MB each
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
    encoder.eval().to(device)
    if classifier is not None:
        classifier.eval().to(device)
    bar = tqdm(total=len(todo), desc="embed", unit="vol", disable=not progress)
    for name, x, error in loader:
        if error is not None:
            summary.failed[name] = error
        else:
            latent = encoder(x.unsqueeze(0).to(device))
            logits = classifier(latent)[0].float().cpu().numpy() if classifier is not None else None
            cache.put(name, latent[0].float().cpu().numpy(), logits)
            summary.done += 1
        bar.update(1)
        bar.set_postfix(failed=len(summary.failed))
    bar.close()
    return summary


def identity_for(encoder_name: str, encoder_config: dict, weights: Path, preprocess_config: PreprocessConfig, latent_dim: int) -> CacheIdentity:
    return CacheIdentity(
        encoder=encoder_identity(encoder_name, encoder_config, weights),
        preprocess=preprocess_config.fingerprint(),
        latent_dim=latent_dim,
    )


def embed_with_encoder(data_dir, cache_dir: str | Path, encoder_name: str, encoder_config: dict,
                       weights: str | Path, preprocess_config: PreprocessConfig, *,
                       classifier: torch.nn.Module | None = None, splits: tuple[str, ...] = (), workers: int = 2,
                       device: torch.device | str = "cpu", progress: bool = True,
                       provenance=None) -> tuple[EmbeddingCache, EmbedSummary]:
    """A dataset's volumes (of `splits`, default all) through encoder weights (and a classifier) into
    the cache at `cache_dir`, created or resumed under this encoder's identity; returns both.
    `data_dir`: a DataSource or a dataset folder. provenance: the encoder's (an image model's); else
    the weights file is described. The cache records it with the dataset added."""
    from engine.data import resolve
    from engine.encoders import ENCODERS
    from engine.encoders.checkpoint import load_ctclip_vision
    from engine.errors import DatasetError
    from engine.provenance import Provenance, describe_dataset, describe_encoder

    dataset = resolve(data_dir, section=None)  # refused before the cache folder is made; no text read
    cases = [c for c in dataset.cases if not splits or c.split in splits]
    if not cases:
        raise DatasetError(f"no cases in split(s) {list(splits)}", dataset.root)
    with torch.device("meta"):
        encoder = ENCODERS.build(encoder_name, encoder_config)
    load_ctclip_vision(encoder, Path(weights))
    made_from = (provenance or Provenance()).merged(data=describe_dataset(data_dir))  # the folder as given, as train and train-encoder record it
    if made_from.encoder is None:  # given bare weights, or an image model older than provenance
        made_from = made_from.merged(encoder=describe_encoder(weights))
    cache = EmbeddingCache.create_or_open(
        cache_dir, identity_for(encoder_name, encoder_config, Path(weights), preprocess_config, encoder.cfg.dim_latent),
        made_from)
    summary = embed_dataset(dataset, [c.volume_name for c in cases], encoder, preprocess_config, cache,
                            classifier=classifier, workers=workers, device=device, progress=progress)
    return cache, summary


def embed_with_image_model(data_dir, cache_dir: str | Path, image_model: str | Path, *,
                           splits: tuple[str, ...] = (), workers: int = 2, device: torch.device | str = "cpu",
                           progress: bool = True) -> EmbedSummary:
    """Latents and classifier logits of a dataset's volumes (of `splits`, default all) into the cache
    at `cache_dir`, with the encoder, classifier and preprocessing of an image model folder or run."""
    from engine.classifier import AbnormalityHead
    from engine.inference import load_weights_strict
    from engine.rundir import load_image_model

    image_root, cfg = load_image_model(image_model)
    classifier = AbnormalityHead(cfg.classifier.config)
    load_weights_strict(classifier, Path(cfg.classifier.weights), "classifier")
    cache, summary = embed_with_encoder(data_dir, cache_dir, cfg.encoder.name, cfg.encoder.config, cfg.encoder.weights,
                                 cfg.preprocess, classifier=classifier, splits=splits,
                                 workers=workers, device=device, progress=progress, provenance=cfg.provenance)
    if summary.done:
        cache.record_classifier(label_set=cfg.label_set.name, classifier=str(image_root))
    return summary
