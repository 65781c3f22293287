"""CPU cost of M3D's image side at full size: the "m3d" preprocessing recipe on a 512 × 512 × 300 CT
(min-max, foreground crop, resize to 1 × 32 × 256 × 256) and one batch-1 float32 forward of the vit3d
encoder (2048 patch tokens) + spatial-pooling connector (→ 256 tokens of --d-llm), random weights.

    python3 bench/vit3d.py [--repeats 2] [--d-llm 3072]
M3D's fixtures measured 10.9 s for the ViT forward on one CPU thread (shared/m3d/full_keys.json).
"""

from __future__ import annotations

import argparse
import time

import torch

from preprocess import SPACING, synthetic_ct


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--d-llm", type=int, default=3072, help="decoder width (M3D-LaMed-Phi-3-4B: 3072)")
    args = ap.parse_args()

    from engine.connectors import SpatialPoolingConfig, build_connector
    from engine.encoders import ENCODERS, VIT3D_ENCODER
    from engine.model_configs import M3D_PREPROCESS
    from engine.preprocess import preprocess
    from engine.volume import Volume

    volume = Volume(synthetic_ct((512, 512, 300)), SPACING)
    seconds, x = best_of(lambda: preprocess(volume, M3D_PREPROCESS), args.repeats)
    print(f"threads {torch.get_num_threads()}; m3d preprocessing 512x512x300 -> {tuple(x.shape)}: {seconds:.2f} s")
    torch.manual_seed(0)
    encoder = ENCODERS.build(VIT3D_ENCODER)
    connector = build_connector(SpatialPoolingConfig(d_llm=args.d_llm)).eval()
    with torch.no_grad():
        seconds, tokens = best_of(lambda: encoder.patch_features(x[None]), args.repeats)
        print(f"vit3d patch features {tuple(tokens.shape)}: {seconds:.2f} s")
        seconds, out = best_of(lambda: connector(tokens), args.repeats)
        print(f"spatial-pooling connector {tuple(out.shape)}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
