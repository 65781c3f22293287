#!/usr/bin/env bash
# Checks pyproject.toml's lower bounds: a fresh venv gets every runtime dependency at the lowest
# release its bound allows (`>=X` installed as `==X`, `==` pins kept), then a subset of the tests
# that exercises them (app start-up, decoding and LoRA, inference, DICOM, metrics, charts, reader-study
# export, UMAP, the demo decoder's GGUF conversion).
# Not run by CI (it installs ~2 GB and takes several minutes).
#   bash scripts/check_lowest.sh                 venv in /tmp/rad3d-lowest (reused when present)
#   VENV=DIR bash scripts/check_lowest.sh [pytest args...]
# torch is the CPU build 2.13.0 as in scripts/install.sh: no other torch is available offline.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/rad3d-lowest}"
PY="$VENV/bin/python"

[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q "torch==2.13.0"
lowest=$("$PY" - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name = re.match(r"[A-Za-z0-9_.\-]+", dep).group(0)
    if name == "torch":
        continue
    print(re.sub(r">=\s*", "==", dep.split(";")[0].split(",")[0]).replace(" ", ""))
EOF
)
echo "check_lowest: installing $(echo $lowest)"
# shellcheck disable=SC2086
"$PY" -m pip install -q $lowest "pytest>=8" "pytest-timeout>=2.2" "torch==2.13.0"
"$PY" -m pip install -q --no-deps -e .
mapfile -t no_deps < <("$PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["rad3d"]["no-deps"], sep="\n")')
"$PY" -m pip install -q --no-deps "${no_deps[@]}"
"$PY" -m pip check || true  # reported, not fatal: an old release may declare a cap it does not need
"$PY" -m pip list 2>/dev/null | grep -i -E "^(transformers|gradio|pillow|pandas|numpy|scipy|accelerate|peft|pydicom|plotly|tokenizers|huggingface.hub|safetensors|gguf|umap-learn) "

if [ $# -eq 0 ]; then
    set -- tests/test_app_start.py tests/test_decoder_generation.py tests/test_inference.py \
        tests/test_io_dicom.py tests/test_metrics_nlg.py tests/test_app_charts.py \
        tests/test_reader_study_export.py tests/test_connectors.py tests/test_umap.py tests/test_demo_smollm2.py
fi
PYTHONPATH="$PWD" "$PY" -m pytest -q -p no:cacheprovider "$@"
