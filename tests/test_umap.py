"""`rad3d umap`: prefix embeddings of two runs (V-2 and V-3 on the tiny training setup) projected
with umap-learn in 2-D and 3-D, seeded, written as one interactive HTML page. One test: umap-learn's first fit in a process
spends ~30 s compiling numba code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cli
from training_fixtures import train_config  # noqa: F401


@pytest.fixture(scope="module")
def trained_v2_run(tmp_path_factory, training_setup, tiny_gpt2_dir):
    from training.connector_recipe import train_connector

    out = tmp_path_factory.mktemp("v2-run") / "run"
    train_connector(train_config(training_setup, tiny_gpt2_dir, out, variant="v2", epochs=1), progress=False)
    return out


@pytest.mark.slow
def test_umap_command_writes_side_by_side_figures(training_setup, trained_v3_run, trained_v2_run, tmp_path, one_thread):
    from engine.cache import EmbeddingCache
    from engine.data import CTRateDataset
    from engine.inference import InferenceSession
    from study.umap_plot import prefix_embeddings, project, run_umap

    data, cache = training_setup["data"], training_setup["cache"]
    names = [c.volume_name for c in CTRateDataset.open(data).split("train")]
    # The flattened embeddings are the run's prefixes, case by case.
    session = InferenceSession.load(trained_v3_run, device="cpu")
    latents, logits = EmbeddingCache.open(cache).stack(names, with_logits=True)
    x = prefix_embeddings(session, latents, logits, batch=5)
    one = session.prefixes(torch.from_numpy(latents[7:8]), torch.from_numpy(logits[7:8]))
    assert x.shape[0] == len(names) and np.allclose(x[7], one.numpy().reshape(-1), atol=1e-5)

    finding = "Cardiomegaly"
    fig, projections, shown = run_umap({"v2": str(trained_v2_run), "v3": str(trained_v3_run)}, str(data), str(cache),
                                       split="train", finding=finding, seed=0)
    assert shown == names and [p.run for p in projections] == ["v2", "v3"]
    assert all(p.coords_2d.shape == (len(names), 2) and p.coords_3d.shape == (len(names), 3) for p in projections)
    labels = CTRateDataset.open(data).split("train")
    positives = sum(int(c.labels[CTRateDataset.open(data).label_set.index(finding)]) for c in labels)
    scatter2d = [t for t in fig.data if t.type == "scatter"]
    assert len(scatter2d) == 4 and len(fig.data) == 8  # yes/no per run, in 2-D and 3-D
    assert sum(len(t.x) for t in scatter2d if t.name.endswith("yes")) == 2 * positives

    # Seeded: the same input gives the same layout (umap-learn's numba code is compiled by now).
    assert np.array_equal(project(x, 2, seed=3), project(x, 2, seed=3))

    out = tmp_path / "umap.html"
    assert cli.main(["umap", "--runs", f"v2={trained_v2_run}", f"v3={trained_v3_run}", "--data", str(data), "--cache",
                     str(cache), "--split", "train", "--finding", finding, "--out", str(out)]) == 0
    html = out.read_text()
    assert "v2 (2-D)" in html and "v3 (3-D)" in html and "scatter3d" in html
    assert cli.main(["umap", "--runs", f"v3={trained_v3_run}", "--data", str(data), "--cache", str(cache),
                     "--split", "train", "--finding", "Not a finding", "--out", str(out)]) == 1
