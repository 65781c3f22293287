"""Issue #17's route experiments on the demo recipe's phantoms, judged on the valid split only, against
the shipped CT-ViT's valid AUROC (training/demo/weights/image/classifier_report.md): a small 3-D CNN
with a global max pool trained end to end (`train`), and a linear probe on regional HU histograms
(`probe`: no learned encoder; it asks whether the demo grid's tensors hold each finding when the
pooling keeps local HU evidence). Figures in README, "The embedded demo model".

    # 1. preprocessed demo-grid tensors (one plain channel, float16) of the phantoms present
    python3 bench/encoder_route.py cache --phantoms DIR --split train --out CACHE/train1.pt [--exclude CACHE/train0.pt]
    python3 bench/encoder_route.py cache --phantoms DIR --split valid --out CACHE/valid.pt
    # 2. train encoder + linear head end to end; per-epoch valid AUROC per finding to OUT/progress.jsonl
    python3 bench/encoder_route.py train --train CACHE/train0.pt CACHE/train1.pt --valid CACHE/valid.pt --out OUT --epochs 5
    # 3. regional HU histograms (4 x 4 x 4 regions x 15 HU bins + the whole volume's) -> logistic regression
    python3 bench/encoder_route.py probe --train CACHE/train0.pt CACHE/train1.pt --valid CACHE/valid.pt

Phantoms are those of the demo recipe (seed 0, 1200 cases, scale 4; `rad3d synth --n 1200 --seed 0
--scale 4 --only-splits train`); labels come from the recipe's plan, so a train folder still being
written can be cached. One thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.labels import ct_rate  # noqa: E402
from engine.preprocess import apply_windows, preprocess_array  # noqa: E402
from engine.synth.config import SynthConfig  # noqa: E402
from engine.synth.writer import assign_splits, plan_dataset  # noqa: E402
from training.configs import DEMO_WINDOWED_PREPROCESS  # noqa: E402

# The demo's five HU windows without CT-ViT's reference channel: that checkerboard only exists to
# steady CT-ViT's per-patch LayerNorm; in a CNN its strong response dominated every GroupNorm group
# (a first run with it: valid macro AUROC 0.51 and 0.50 after epochs 1 and 2, pleural effusion 0.55).
PRE = replace(DEMO_WINDOWED_PREPROCESS, reference_channel=0.0)
from training.demo.build import DemoRecipe  # noqa: E402


class CNN3D(torch.nn.Module):
    """(B, C, D, H, W) -> (B, 2 * widths[-1]): one 3x3x3 conv + GroupNorm + ReLU per stage (the first
    strides (1, 2, 2): the demo's voxels are twice as long along D; the others 2), then the mean and
    the max over the grid (the max keeps one strong local response instead of averaging it away)."""

    def __init__(self, channels: int, widths=(8, 16, 32, 64), groups: int = 4):
        super().__init__()
        layers, c = [], channels
        for i, w in enumerate(widths):
            layers += [torch.nn.Conv3d(c, w, 3, stride=(1, 2, 2) if i == 0 else 2, padding=1, bias=False),
                       torch.nn.GroupNorm(groups, w), torch.nn.ReLU(inplace=True)]
            c = w
        self.stages = torch.nn.Sequential(*layers)
        self.dim = 2 * c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stages(x).flatten(2)
        return torch.cat([f.mean(-1), f.amax(-1)], dim=1)


def recipe_labels() -> dict[str, np.ndarray]:
    r = DemoRecipe()
    cfg = SynthConfig(n=r.cases, seed=r.seed, scale=r.scale)
    plans = plan_dataset(cfg)
    splits = assign_splits(plans, cfg)
    order = ct_rate().names
    # keyed by what follows the split prefix (4_a_1.nii.gz): older flat folders name every file train_
    return {p.name.split("_", 1)[1]: (splits[p.name], np.array([n in p.findings for n in order], np.float32))
            for p in plans}


def cache(args) -> None:
    import nibabel as nib
    from tqdm import tqdm

    labels = recipe_labels()
    files = sorted(p for p in (Path(args.phantoms) / "volumes").rglob("*.nii.gz")
                   if labels[p.name.split("_", 1)[1]][0] == args.split)
    done = {n for c in args.exclude for n in torch.load(c)["names"]}  # cached already (in an earlier part)
    files = [f for f in files if f.name not in done]
    files = files[: args.limit] if args.limit else files
    xs, ys, names = [], [], []
    for f in tqdm(files, desc=f"cache {args.split}"):
        try:
            img = nib.load(str(f))
            hu = np.asarray(img.dataobj, dtype=np.float32) - 1024.0  # flat layout: raw = HU + 1024
        except (OSError, EOFError, ValueError) as err:  # a file still being written
            print(f"skipped {f.name}: {err}")
            continue
        x = preprocess_array(hu, tuple(float(z) for z in img.header.get_zooms()[:3]), PRE.base)
        xs.append(x.to(torch.float16))
        ys.append(labels[f.name.split("_", 1)[1]][1])
        names.append(f.name)
    torch.save({"x": torch.stack(xs), "y": torch.from_numpy(np.stack(ys)), "names": names}, args.out)
    print(f"{len(names)} cases -> {args.out}")


def aurocs(y: np.ndarray, p: np.ndarray) -> list[float]:
    from sklearn.metrics import roc_auc_score

    return [float(roc_auc_score(y[:, j], p[:, j])) for j in range(y.shape[1])]


def _batch(x16: torch.Tensor, idx, rng: np.random.Generator | None) -> torch.Tensor:
    x = x16[idx].float()
    if rng is not None:  # shifts of up to 2 / 4 / 4 voxels, as the CT-ViT recipe's augmentation
        sd, sh, sw = (int(rng.integers(-m, m + 1)) for m in (2, 4, 4))
        x = torch.roll(x, (sd, sh, sw), dims=(2, 3, 4))
    return apply_windows(x, PRE)


def predict(model, head, x16, batch=8) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x16), batch):
            out.append(torch.sigmoid(head(model(_batch(x16, slice(i, i + batch), None)))))
    model.train()
    return torch.cat(out).numpy()


def train(args) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    parts = [torch.load(t) for t in args.train]
    tr = {k: torch.cat([p[k] for p in parts]) for k in ("x", "y")}
    va = torch.load(args.valid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = CNN3D(PRE.channels, tuple(args.widths))
    head = torch.nn.Linear(model.dim, tr["y"].shape[1])
    y = tr["y"]
    pos = y.mean(0).clamp(0.05, 0.95)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(1 - pos) / pos)  # class-weighted, as the demo head
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    steps = args.epochs * (len(y) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    names, best, start = ct_rate().names, -1.0, time.time()
    for epoch in range(args.epochs):
        perm = rng.permutation(len(y))
        for i in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            loss = loss_fn(head(model(_batch(tr["x"], idx, rng))), y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        a = aurocs(va["y"].numpy(), predict(model, head, va["x"]))
        rec = {"epoch": epoch + 1, "minutes": round((time.time() - start) / 60, 1), "loss": round(float(loss.detach()), 4),
               "valid_macro_auroc": round(float(np.mean(a)), 4), "valid_auroc": dict(zip(names, np.round(a, 4)))}
        with open(out / "progress.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in ("epoch", "minutes", "loss", "valid_macro_auroc")}), flush=True)
        if rec["valid_macro_auroc"] > best:
            best = rec["valid_macro_auroc"]
            torch.save({"encoder": model.state_dict(), "head": head.state_dict(), "record": rec}, out / "best.pt")


HU_EDGES = (-1000, -950, -900, -800, -700, -500, -200, -50, 20, 60, 150, 300, 600, 1000, 2000, 3001)


def histogram_features(x16: torch.Tensor, blocks=(4, 4, 4)) -> np.ndarray:
    """Per case: the share of voxels in each HU bin, in each of the blocks' regions and over the whole grid."""
    edges = torch.tensor(HU_EDGES, dtype=torch.float32)
    out = []
    for i in range(0, len(x16), 16):
        lo, hi = PRE.hu_range
        hu = x16[i:i + 16].float()[:, 0] * ((hi - lo) / 2) + (lo + hi) / 2
        onehot = torch.nn.functional.one_hot(torch.bucketize(hu, edges[1:-1]), len(edges) - 1)
        onehot = onehot.permute(0, 4, 1, 2, 3).float()
        regions = torch.nn.functional.adaptive_avg_pool3d(onehot, blocks).flatten(1)
        out.append(torch.cat([regions, onehot.mean((2, 3, 4))], 1))
    return torch.cat(out).numpy()


def probe(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(1)
    parts = [torch.load(t) for t in args.train]
    va = torch.load(args.valid)
    x_tr = np.concatenate([histogram_features(p["x"]) for p in parts])
    y_tr = np.concatenate([p["y"].numpy() for p in parts])
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_va = scaler.transform(x_tr), scaler.transform(histogram_features(va["x"]))
    scores = np.stack([LogisticRegression(C=args.C, max_iter=2000, class_weight="balanced").fit(x_tr, y_tr[:, j])
                       .decision_function(x_va) for j in range(y_tr.shape[1])], axis=1)
    a = aurocs(va["y"].numpy(), scores)
    print(json.dumps({"valid_macro_auroc": round(float(np.mean(a)), 3), **dict(zip(ct_rate().names, np.round(a, 3)))}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--phantoms", required=True)
    c.add_argument("--split", required=True, choices=("train", "valid", "test"))
    c.add_argument("--out", required=True)
    c.add_argument("--limit", type=int)
    c.add_argument("--exclude", nargs="*", default=[], help="caches whose cases to leave out (cache in parts)")
    t = sub.add_parser("train")
    t.add_argument("--train", required=True, nargs="+")
    t.add_argument("--valid", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    t.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("probe")
    q.add_argument("--train", required=True, nargs="+")
    q.add_argument("--valid", required=True)
    q.add_argument("--C", type=float, default=0.01, help="inverse L2 strength (fixed beforehand, not tuned on valid)")
    args = p.parse_args()
    {"cache": cache, "train": train, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    main()
