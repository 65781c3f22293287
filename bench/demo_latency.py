"""CPU demo latency: "volume already loaded → probabilities and a report" with a demo-like setup
(demo-small CT-ViT encoder, 18-label head, V-3 connector of 2 layers, SmolLM2-135M-shaped decoder, all
random weights), through the project's path (transformers' `generate`) and the former custom greedy
loop (bench/greedy_reference.py); and preprocessing of
a 512 × 512 × 300 volume to the demo grid and to CT-CLIP's full grid.

Reports are forced to --tokens new tokens (the demo writes the short Impression, ~20–40 tokens);
the two paths' tokens must be identical or the script exits 1.

With --run, the REAL trained run instead (e.g. the embedded demo, $RAD3D_HOME/demo/runs/v3) on one
volume read beforehand (not timed): --volume FILE (NIfTI / DICOM; --rescale SLOPE INTERCEPT as in
`rad3d report`, e.g. 1 -1024 for the demo phantoms' raw values) or --data DIR (its first test-split
case, metadata.csv applied by the dataset). Times preprocessing, encoder + classifier and the whole
case through `generate(inputs_embeds=...)` (the project's path) and the reference loop, both greedy
with the run's max_new_tokens and stopping at EOS as the app does; tokens must be identical (exit 1).

    python3 bench/demo_latency.py [--tokens 32] [--repeats 3] [--int8]
    python3 bench/demo_latency.py --run RUN (--volume FILE [--rescale SLOPE INTERCEPT] | --data DIR) [--repeats 3]
Targets (issue #7, 2 CPU cores): report ≤ 5 s, preprocessing ≤ 10 s.
"""

from __future__ import annotations

import argparse
import sys

from _common import IdsOnlyTokenizer, environment, random_decoder, timed
from greedy_reference import int8_decoder, reference_generate
from preprocess import SPACING, synthetic_ct


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="random weights: forced report length")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--int8", action="store_true", help="also time the opt-in int8 decoder (not token-identical)")
    real = ap.add_argument_group("real run (instead of random weights)")
    real.add_argument("--run", help="run directory, e.g. $RAD3D_HOME/demo/runs/v3")
    source = real.add_mutually_exclusive_group()
    source.add_argument("--volume", help="a NIfTI file, DICOM series folder or zipped series to time")
    source.add_argument("--data", help="a dataset folder (CT-RATE format): its first test-split case is timed")
    real.add_argument("--rescale", nargs=2, type=float, metavar=("SLOPE", "INTERCEPT"),
                      help="with --volume: HU = SLOPE * stored + INTERCEPT, voxels as stored (as rad3d report)")
    return ap


def main(argv=None) -> int:
    import torch

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.encoders import ENCODERS
    from engine.generation import GenerationSettings
    from engine.model import build_report_generator
    from engine.preprocess import PreprocessConfig, preprocess_array

    ap = parser()
    args = ap.parse_args(argv)
    if args.run is None and (args.volume or args.data or args.rescale):
        ap.error("--volume, --data and --rescale go with --run")
    if args.run is not None:
        if not (args.volume or args.data):
            ap.error("--run needs --volume FILE or --data DIR")
        if args.int8:
            ap.error("--int8 is for the random-weight mode only")
        if args.rescale and args.data:
            ap.error("--rescale goes with --volume; --data takes each case's rescale from its metadata.csv")
        import _demo_run

        return _demo_run.main(args)
    device = torch.device("cpu")

    torch.manual_seed(0)
    encoder = ENCODERS.build("ctvit", "demo-small").eval()
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=512, n_labels=18)).eval()
    decoder = random_decoder("smollm2-135m", device, torch.float32)
    generator = build_report_generator("v3", decoder, n_layers=2).eval()
    tokenizer = IdsOnlyTokenizer(decoder.config.eos_token_id)
    settings = GenerationSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    demo_grid = PreprocessConfig(spacing_mm=(3.75, 3.75, 7.5), shape_xyz=(96, 96, 48))
    hu = synthetic_ct((512, 512, 300))

    @torch.no_grad()
    def case(reference: bool, gen=generator):
        x = preprocess_array(hu, SPACING, demo_grid)
        latent = encoder(x.unsqueeze(0))
        logits = head(latent)
        probabilities = torch.sigmoid(logits)
        if reference:
            return probabilities, reference_generate(gen.decoder, tokenizer, gen.prefix(latent, logits), settings=settings)
        return probabilities, gen.generate(latent, logits, tokenizer, settings)

    case(False), case(True)  # warm-up
    plain_s, (_, plain) = timed(lambda: case(False), device, args.repeats)
    ref_s, (_, ref) = timed(lambda: case(True), device, args.repeats)
    pre_demo_s, _ = timed(lambda: preprocess_array(hu, SPACING, demo_grid), device, args.repeats)
    pre_full_s, _ = timed(lambda: preprocess_array(hu, SPACING, PreprocessConfig()), device, args.repeats)
    with torch.no_grad():
        x = preprocess_array(hu, SPACING, demo_grid).unsqueeze(0)
        enc_s, _ = timed(lambda: head(encoder(x)), device, args.repeats)
    equal = ref.reports[0].token_ids == plain.reports[0].token_ids

    print(environment(device))
    print(f"demo-small encoder + head + V-3 (2 layers) + smollm2-135m dims, random weights, fp32; "
          f"{args.tokens}-token report; 512x512x300 int16 volume; median of {args.repeats}")
    print(f"{'stage':<44} {'seconds':>8}")
    print(f"{'preprocess to the demo grid (96x96x48)':<44} {pre_demo_s:>8.2f}")
    print(f"{'preprocess to CT-CLIP grid (480x480x240)':<44} {pre_full_s:>8.2f}")
    print(f"{'encoder + classifier (demo grid)':<44} {enc_s:>8.2f}")
    print(f"{'volume -> probabilities + report, generate':<44} {plain_s:>8.2f}")
    print(f"{'volume -> probabilities + report, reference':<44} {ref_s:>8.2f}")
    print(f"ratio generate/reference: {plain_s / ref_s:.2f}; report target 5 s: {'met' if plain_s <= 5 else 'NOT met'}; "
          f"preprocessing target 10 s (CT-CLIP grid): {'met' if pre_full_s <= 10 else 'NOT met'}")
    if args.int8:
        quantised = build_report_generator("v3", int8_decoder(decoder), n_layers=2).eval()
        quantised.connector.load_state_dict(generator.connector.state_dict())
        case(False, quantised)
        q_s, (_, q) = timed(lambda: case(False, quantised), device, args.repeats)
        same = sum(a == b for a, b in zip(q.reports[0].token_ids, plain.reports[0].token_ids))
        print(f"int8 decoder (opt-in): {q_s:.2f} s; {same}/{args.tokens} tokens equal to fp32")
    print("tokens verified equal" if equal else "MISMATCH: reference tokens differ from generate")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
