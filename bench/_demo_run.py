"""The real-run mode of bench/demo_latency.py: one trained run (e.g. the embedded demo) on one volume,
"volume already loaded → probabilities and a report", through the project's path (transformers'
`generate(inputs_embeds=...)`) and through the former custom greedy loop (bench/greedy_reference.py)
on the same prefix, both stopping at EOS as the app does (reports are not forced to a length here)."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import environment

TARGET_S = 5.0  # issue #7: volume loaded → probabilities + report on 2 CPU cores


@dataclass
class CaseTiming:
    """One case through the session's path; seconds per stage and the report's tokens."""

    preprocess_s: float
    encode_s: float
    generate_s: float
    total_s: float
    token_ids: list[int]
    finished: bool  # True when EOS ended the report
    text: str


def read_volume(volume: str | None, data: str | None, rescale: list[float] | None):
    """The volume to time and a label for it: --volume as `rad3d report` reads it (with --rescale:
    the CSV's rescale on top of the file's, voxels as stored), or --data's first test-split case
    read by the dataset (its metadata.csv rescale and spacing applied there)."""
    from engine.errors import DatasetError

    if data is not None:
        from engine.data import resolve

        dataset = resolve(data, section=None)
        cases = dataset.split("test")
        if not cases:
            raise DatasetError("no test-split case to time (pass --volume instead)", dataset.root)
        return dataset.load_volume(cases[0]), f"{cases[0].volume_name} (first test case of {dataset.root})"
    from engine.io import load_volume

    if rescale:
        label = f"{volume} (rescale {rescale[0]:g} {rescale[1]:+g})"
        return load_volume(volume, rescale=tuple(rescale), reorient=False), label
    return load_volume(volume), str(volume)


def run_case(session, volume, settings, *, reference: bool) -> CaseTiming:
    """What the app does for one loaded volume (image features, prefix, greedy report), through
    transformers' generate or, `reference=True`, the former custom loop on the same prefix."""
    from engine.generation import generate_from_prefix
    from greedy_reference import reference_generate

    start = time.perf_counter()
    features = session.image.features(volume)
    _ = features.probabilities  # the chart's numbers, computed as the app computes them
    prefix = session.prefixes(features.latent[None], features.logits[None])
    run = reference_generate if reference else generate_from_prefix
    result = run(session.generator.decoder, session.tokenizer, prefix, settings=settings)
    total = time.perf_counter() - start
    report = result.reports[0]
    return CaseTiming(features.preprocess_seconds, features.encode_seconds, result.seconds, total,
                      report.token_ids, report.finished, report.text)


def median_case(runs: list[CaseTiming]) -> CaseTiming:
    """Per-stage medians; the tokens of the last run (every run decodes the same prefix)."""
    stages = ("preprocess_s", "encode_s", "generate_s", "total_s")
    med = {f: statistics.median(getattr(r, f) for r in runs) for f in stages}
    return dataclasses.replace(runs[-1], **med)


def main(args) -> int:
    from engine.errors import Rad3dError
    from engine.inference import InferenceSession
    from greedy_reference import fast_greedy_supported

    try:
        session = InferenceSession.load(args.run, device="cpu")
        volume, label = read_volume(args.volume, args.data, args.rescale)  # not timed: "already loaded"
    except Rad3dError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # The app's greedy choice: the run's settings with one beam (ui.reporting.settings_for).
    settings = dataclasses.replace(session.settings, num_beams=1)
    decoder = session.generator.decoder
    if not fast_greedy_supported(decoder):
        print(f"error: the reference loop cannot reproduce generate on this decoder ({type(decoder).__name__}: "
              "a PEFT wrapper or extra logits processors)", file=sys.stderr)
        return 1

    run_case(session, volume, settings, reference=False), run_case(session, volume, settings, reference=True)  # warm-up
    plain = median_case([run_case(session, volume, settings, reference=False) for _ in range(args.repeats)])
    ref = median_case([run_case(session, volume, settings, reference=True) for _ in range(args.repeats)])
    equal = ref.token_ids == plain.token_ids

    cfg = session.run.config
    grid = "x".join(map(str, session.preprocess_config.shape_xyz))
    shape = "x".join(map(str, volume.hu.shape))
    print(environment(session.device))
    print(f"run {session.run.root} (variant {cfg.variant}, decoder {Path(cfg.decoder.path).name}, "
          f"{next(decoder.parameters()).dtype}); volume {label}, {shape} voxels; greedy, "
          f"max_new_tokens {settings.max_new_tokens}, stops at EOS; median of {args.repeats}")
    print(f"{'stage':<52} {'seconds':>8}")
    print(f"{f'preprocess to the run grid ({grid})':<52} {plain.preprocess_s:>8.2f}")
    print(f"{'encoder + classifier':<52} {plain.encode_s:>8.2f}")
    print(f"{'report, transformers generate (project path)':<52} {plain.generate_s:>8.2f}")
    print(f"{'report, reference loop (bench/greedy_reference)':<52} {ref.generate_s:>8.2f}")
    print(f"{'volume -> probabilities + report, generate':<52} {plain.total_s:>8.2f}")
    print(f"{'volume -> probabilities + report, reference loop':<52} {ref.total_s:>8.2f}")
    ended = "ended at EOS" if plain.finished else f"cut at max_new_tokens {settings.max_new_tokens}"
    print(f"tokens generated: {len(plain.token_ids)} ({ended}); report: {plain.text[:120]!r}")
    print(f"seconds per case: generate {plain.total_s:.2f}, reference loop {ref.total_s:.2f}; "
          f"ratio generate/reference {plain.total_s / ref.total_s:.2f}; target {TARGET_S:g} s "
          f"(volume loaded -> probabilities + report): {'met' if plain.total_s <= TARGET_S else 'NOT met'}")
    print("tokens verified equal" if equal else
          f"MISMATCH: reference tokens differ from generate ({len(ref.token_ids)} vs {len(plain.token_ids)} tokens)")
    return 0 if equal else 1
