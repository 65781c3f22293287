"""UMAP of the prefix embeddings of one or more runs (the paper's V-2 vs V-3 figure): each run's
connector turns the cached latents (and logits) of a split into prefixes, each prefix is flattened
to one vector, and umap-learn projects them to 2-D and 3-D with a fixed seed; points are coloured
by whether the case has a chosen finding.

This module reads runs only through engine.inference (types and the prefix call), never a UI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError


@dataclass
class Projection:
    run: str
    coords_2d: np.ndarray  # (N, 2)
    coords_3d: np.ndarray  # (N, 3)


def prefix_embeddings(session, latents: np.ndarray, logits: np.ndarray | None, batch: int = 64) -> np.ndarray:
    """(N, prefix_len · d_llm) flattened prefixes of a loaded InferenceSession."""
    out = []
    for start in range(0, len(latents), batch):
        chunk = latents[start:start + batch]
        lg = None if logits is None else logits[start:start + batch]
        out.append(session.prefixes(chunk, lg).float().cpu().numpy().reshape(len(chunk), -1))
    return np.concatenate(out)


def project(x: np.ndarray, dims: int, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """UMAP to `dims` dimensions, seeded (umap-learn then runs single-threaded: reproducible)."""
    import umap

    n = len(x)
    if n < 4:
        raise ConfigError(f"UMAP needs at least 4 cases, got {n}")
    reducer = umap.UMAP(n_components=dims, n_neighbors=max(2, min(n_neighbors, n - 1)), random_state=seed,
                        init="spectral" if n > dims + 2 else "random", min_dist=0.1, n_jobs=1)
    return reducer.fit_transform(x.astype(np.float32))


def umap_figure(projections: list[Projection], names: list[str], positive: np.ndarray, finding: str):
    """One plotly figure: a 2-D panel per run on the top row, a 3-D panel per run below."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    k = len(projections)
    fig = make_subplots(rows=2, cols=k, specs=[[{"type": "xy"}] * k, [{"type": "scene"}] * k],
                        subplot_titles=[f"{p.run} (2-D)" for p in projections] + [f"{p.run} (3-D)" for p in projections],
                        vertical_spacing=0.08, row_heights=[0.45, 0.55])
    groups = ((positive.astype(bool), f"{finding}: yes", "#d62728"), (~positive.astype(bool), f"{finding}: no", "#1f77b4"))
    for col, p in enumerate(projections, start=1):
        for mask, label, colour in groups:
            text = [n for n, m in zip(names, mask) if m]
            fig.add_trace(go.Scatter(x=p.coords_2d[mask, 0], y=p.coords_2d[mask, 1], mode="markers", name=label,
                                     legendgroup=label, showlegend=col == 1, text=text, marker=dict(color=colour, size=6)),
                          row=1, col=col)
            fig.add_trace(go.Scatter3d(x=p.coords_3d[mask, 0], y=p.coords_3d[mask, 1], z=p.coords_3d[mask, 2],
                                       mode="markers", name=label, legendgroup=label, showlegend=False, text=text,
                                       marker=dict(color=colour, size=3)), row=2, col=col)
    fig.update_layout(title=f"UMAP of prefix embeddings, coloured by {finding}", height=900, width=max(700, 520 * k))
    return fig


def run_umap(runs: dict[str, str], data_dir, cache_dir: str, split: str = "test", finding: str | None = None,
             seed: int = 0, device: str = "cpu"):
    """(figure, projections, names): prefixes of every run for the split's cases, projected."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.inference import InferenceSession

    dataset = resolve(data_dir, section=None)  # data_dir: a DataSource or a dataset folder
    cases = dataset.split(split)
    if not cases:
        raise ConfigError(f"split {split!r} has no cases", data_dir)
    if cases[0].labels is None:
        raise ConfigError("colouring by finding needs a labels CSV in the dataset", data_dir)
    names_all = list(dataset.label_set.names)
    finding = finding or names_all[int(np.argmax(np.mean([c.labels for c in cases], axis=0)))]
    if finding not in names_all:
        raise ConfigError(f"unknown finding {finding!r} (label set: {', '.join(names_all)})", data_dir)
    names = [c.volume_name for c in cases]
    positive = np.array([c.labels[names_all.index(finding)] > 0 for c in cases])
    cache = EmbeddingCache.open(cache_dir)
    projections = []
    for run_name, run_dir in runs.items():
        session = InferenceSession.load(run_dir, device=device)
        latents, logits = cache.stack(names, with_logits=session.generator.uses_logits)
        x = prefix_embeddings(session, latents, logits)
        projections.append(Projection(run_name, project(x, 2, seed), project(x, 3, seed)))
        del session
    return umap_figure(projections, names, positive, finding), projections, names
