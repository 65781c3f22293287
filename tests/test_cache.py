"""The embedding cache: keyed by VolumeName, atomic entries, refuses foreign settings by name."""

import numpy as np
import pytest

from engine.cache import CacheIdentity, EmbeddingCache
from engine.errors import ConfigError

IDENT = CacheIdentity(encoder="ctvit:abc", preprocess="pp:123", latent_dim=4)


def test_put_get_stack_round_trip(tmp_path):
    cache = EmbeddingCache.create_or_open(tmp_path / "c", IDENT)
    rng = np.random.default_rng(0)
    latents = {f"train_{i}_a_1.nii.gz": rng.normal(size=4).astype(np.float32) for i in range(3)}
    for name, lat in latents.items():
        cache.put(name, lat)
    reopened = EmbeddingCache.open(tmp_path / "c")
    assert reopened.names() == sorted(latents) and len(reopened) == 3
    order = ["train_2_a_1.nii.gz", "train_0_a_1.nii.gz"]
    stacked, logits = reopened.stack(order)
    np.testing.assert_array_equal(stacked, np.stack([latents[n] for n in order]))
    assert logits is None
    assert not list((tmp_path / "c" / "entries").glob("*.tmp"))


def test_logits_are_added_later_and_recorded(tmp_path):
    cache = EmbeddingCache.create_or_open(tmp_path / "c", IDENT)
    cache.put("a.nii.gz", np.ones(4))
    with pytest.raises(ConfigError, match="no classifier logits"):
        cache.stack(["a.nii.gz"], with_logits=True)
    cache.set_logits({"a.nii.gz": np.arange(18)}, label_set="ct-rate", classifier="head:1")
    latents, logits = EmbeddingCache.open(tmp_path / "c").stack(["a.nii.gz"], with_logits=True)
    np.testing.assert_array_equal(logits[0], np.arange(18, dtype=np.float32))
    np.testing.assert_array_equal(latents[0], np.ones(4, dtype=np.float32))
    assert EmbeddingCache.open(tmp_path / "c").identity.classifier == "head:1"


def test_cache_with_other_settings_is_refused_by_name(tmp_path):
    EmbeddingCache.create_or_open(tmp_path / "c", IDENT)
    other = CacheIdentity(encoder="ctvit:abc", preprocess="pp:999", latent_dim=4)
    with pytest.raises(ConfigError, match=r"preprocess: cache has 'pp:123', asked 'pp:999'"):
        EmbeddingCache.create_or_open(tmp_path / "c", other)
    # the existing cache is untouched by the refusal
    assert EmbeddingCache.open(tmp_path / "c").identity == IDENT


def test_missing_cases_and_bad_entries_are_named(tmp_path):
    cache = EmbeddingCache.create_or_open(tmp_path / "c", IDENT)
    cache.put("a.nii.gz", np.zeros(4))
    with pytest.raises(ConfigError, match=r"lacks 2 requested case\(s\): b.nii.gz, c.nii.gz"):
        cache.require(["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    with pytest.raises(ConfigError, match="latent of size 5"):
        cache.put("d.nii.gz", np.zeros(5))
    with pytest.raises(ConfigError, match="non-finite"):
        cache.put("d.nii.gz", np.array([0, np.nan, 0, 0]))
    with pytest.raises(ConfigError, match="not a valid VolumeName"):
        cache.put("../escape", np.zeros(4))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="not an embedding cache"):
        EmbeddingCache.create_or_open(tmp_path / "junk", IDENT)
