"""Filling the embedding cache: each volume is read, preprocessed and encoded once (the encoder and
the classifier are frozen). Volumes are read and preprocessed in DataLoader worker processes while
the main process encodes; a rerun skips cached volumes, and a crash loses at most the volumes in
flight because every entry is written atomically. Under `accelerate launch` each process encodes its
shard of the volumes still missing (engine.shards) into the same cache; the counts are joined."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from engine.cache import CacheIdentity, EmbeddingCache
from engine.errors import Rad3dError
from engine.preprocess import PreprocessConfig, preprocess
from engine.shards import Shard


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

    @classmethod
    def joined(cls, parts: list[EmbedSummary]) -> EmbedSummary:
        """The shards' summaries as one; each shard counted the same cached volumes as skipped."""
        failed = {name: err for part in parts for name, err in part.failed.items()}
        return cls(sum(p.done for p in parts), parts[0].skipped, failed)


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
    shard: Shard | None = None,
) -> EmbedSummary:
    """Encode the volumes of `names` the cache lacks (this process's shard of them) into the
    cache; returns the summary of all shards."""
    shard = shard or Shard()
    cached = set(cache.names())  # one listing: 8x faster than a stat per name for 50,188 names on a local disk
    todo = [n for n in names if n not in cached]
    shard.wait()  # every shard has listed the missing volumes before any is written: all see the same list
    summary = EmbedSummary(skipped=len(names) - len(todo))
    mine = shard.take(todo)
    if mine:
        _encode(dataset, mine, encoder, preprocess_config, cache, summary, classifier=classifier, workers=workers,
                device=device, progress=progress and shard.is_main)
    return EmbedSummary.joined(shard.gather(summary))


@torch.no_grad()
def _encode(dataset, names: list[str], encoder, preprocess_config, cache, summary: EmbedSummary, *,
            classifier, workers: int, device, progress: bool) -> None:
    from tqdm.auto import tqdm

    loader = DataLoader(
        PreprocessedVolumes(dataset, names, preprocess_config),
        batch_size=None,  # one volume at a time: full-size volumes are ~220 MB each
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
    encoder.eval().to(device)
    if classifier is not None:
        classifier.eval().to(device)
    bar = tqdm(total=len(names), desc="embed", unit="vol", disable=not progress)
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


def latent_dim(encoder) -> int:
    """The width of the rows an encoder gives the cache (ViT3D's patch encoder: all its patch tokens)."""
    return getattr(encoder, "latent_dim", None) or encoder.cfg.dim_latent


def identity_for(encoder_name: str, encoder_config: dict, weights: Path, preprocess_config: PreprocessConfig,
                 latent_dim: int) -> CacheIdentity:
    return CacheIdentity(
        encoder=encoder_identity(encoder_name, encoder_config, weights),
        preprocess=preprocess_config.fingerprint(),
        latent_dim=latent_dim,
    )


def embed_with_encoder(data_dir, cache_dir: str | Path, encoder_name: str, encoder_config: dict,
                       weights: str | Path, preprocess_config: PreprocessConfig, *,
                       classifier: torch.nn.Module | None = None, splits: tuple[str, ...] = (), workers: int = 2,
                       device: torch.device | str = "cpu", progress: bool = True,
                       provenance=None, shard: Shard | None = None) -> tuple[EmbeddingCache, EmbedSummary]:
    """A dataset's volumes (of `splits`, default all) through encoder weights (and a classifier) into
    the cache at `cache_dir`, created or resumed under this encoder's identity; returns both.
    `data_dir`: a DataSource or a dataset folder. provenance: the encoder's (an image model's); else
    the weights file is described. The cache records it with the dataset added. `shard`: this
    process's part when several share the work (default: all of it)."""
    from engine.data import resolve
    from engine.errors import DatasetError
    from engine.image_model import load_encoder
    from engine.provenance import Provenance, describe_dataset, describe_encoder

    shard = shard or Shard()
    dataset = resolve(data_dir, section=None)  # refused before the cache folder is made; no text read
    cases = [c for c in dataset.cases if not splits or c.split in splits]
    if not cases:
        raise DatasetError(f"no cases in split(s) {list(splits)}", dataset.root)
    encoder = load_encoder(encoder_name, encoder_config, weights)
    # the folder as given, as train and train-encoder record it
    made_from = (provenance or Provenance()).merged(data=describe_dataset(data_dir))
    if made_from.encoder is None:  # given bare weights, or an image model older than provenance
        made_from = made_from.merged(encoder=describe_encoder(weights))
    with shard.main_first():  # one process creates the folder and manifest; the others open them
        cache = EmbeddingCache.create_or_open(
            cache_dir, identity_for(encoder_name, encoder_config, Path(weights), preprocess_config, latent_dim(encoder)),
            made_from)
    summary = embed_dataset(dataset, [c.volume_name for c in cases], encoder, preprocess_config, cache,
                            classifier=classifier, workers=workers, device=device, progress=progress, shard=shard)
    return cache, summary


def embed_with_image_model(data_dir, cache_dir: str | Path, image_model: str | Path, *,
                           splits: tuple[str, ...] = (), workers: int = 2, device: torch.device | str = "cpu",
                           progress: bool = True, shard: Shard | None = None) -> EmbedSummary:
    """Latents and classifier logits of a dataset's volumes (of `splits`, default all) into the cache
    at `cache_dir`, with the encoder, classifier and preprocessing of an image model folder or run."""
    from engine.image_model import open_image_model

    image = open_image_model(image_model, with_encoder=False)  # the encoder is loaded where the cache is opened
    cfg = image.spec
    cache, summary = embed_with_encoder(data_dir, cache_dir, cfg.encoder.name, cfg.encoder.config, cfg.encoder.weights,
                                 image.preprocess_config, classifier=image.classifier, splits=splits,
                                 workers=workers, device=device, progress=progress, provenance=cfg.provenance,
                                 shard=shard)
    if summary.done and (shard is None or shard.is_main):  # the manifest has one writer
        cache.record_classifier(label_set=image.label_set.name, classifier=str(image.source))
    return summary
