#!/usr/bin/env bash
# The classifier's in/out-of-domain table on small phantom sets (CPU, minutes): a tiny CT-ViT image
# model, its head trained on the CT-RATE-like domain, then adapted (last layer + a 21-finding head) to
# the inspect-like domain; both scored on both test splits. Usage: bench/domain_table_small.sh OUT [N]
set -euo pipefail
out=${1:?usage: bench/domain_table_small.sh OUT [N]}; n=${2:-24}
here=$(cd "$(dirname "$0")/.." && pwd); export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
rad3d() { python3 "$here/cli.py" "$@"; }
mkdir -p "$out"
rad3d synth --out "$out/ct" --n "$n" --seed 0 --scale 8
rad3d synth --out "$out/insp" --n "$n" --seed 0 --scale 8 --domain inspect-like
python3 -c "import sys; sys.path.insert(0, '$here/tests'); from pathlib import Path; \
from training_fixtures import write_image_model; write_image_model(Path('$out/image0'))"
rad3d embed --data "$out/ct" --image-model "$out/image0" --out "$out/cache-ct" --workers 1 --device cpu
rad3d train-classifier --cache "$out/cache-ct" --data "$out/ct" --image-model "$out/image0" --out "$out/base"
rad3d train-classifier --tune-last-layer --data "$out/insp" --image-model "$out/base" --out "$out/adapted" --epochs 5
rad3d domain-table --image-models "base=$out/base" "adapted=$out/adapted" \
  --datasets "ct-rate-like=$out/ct" "inspect-like=$out/insp" --work "$out/work" --workers 1 --out "$out/table.md"
