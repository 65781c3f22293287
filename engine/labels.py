"""Label sets: the ordered finding names a classifier predicts and the extractor looks for.

A label set is data, so INSPECT's findings or a user's own set is a JSON file, not a code change:
{"name": "...", "findings": [{"name": "Cardiomegaly", "synonyms": ["enlarged heart", ...]}, ...]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import JsonConfig, read_json
from engine.errors import ConfigError

_BUILTIN_DIR = Path(__file__).with_name("label_sets")


@dataclass(frozen=True)
class LabelSet(JsonConfig):
    name: str
    names: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # A derived set (`rad3d labels derive`) says how it was made; per-finding counts sit in each finding's entry.
    _json_ignore = ("derived_by",)

    def __post_init__(self):
        # every finding has its (possibly empty) synonyms, so a set built in code equals the same set read back
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "synonyms", {n: tuple(self.synonyms.get(n, ())) for n in self.names})
        problem = name_problem(self.names)
        if problem:
            raise ConfigError(f"label set {self.name!r}: {problem}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, finding: str) -> int:
        return self.names.index(finding)

    # Written as {"name", "findings": [{"name", "synonyms"}, ...]}: one entry per finding, in order.
    def _json_out(self, data: dict) -> dict:
        return {"name": self.name,
                "findings": [{"name": n, "synonyms": list(self.synonyms.get(n, ()))} for n in self.names]}

    @classmethod
    def _json_in(cls, data) -> dict:
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            raise ConfigError("not a label set (no findings list)")
        findings = data["findings"]
        if not all(isinstance(f, dict) and "name" in f for f in findings):
            raise ConfigError("not a label set (a finding without a name)")
        problem = name_problem([f["name"] for f in findings])
        if problem:
            raise ConfigError(problem)
        rest = {k: v for k, v in data.items() if k != "findings"}
        return {**rest, "names": [f["name"] for f in findings],
                "synonyms": {f["name"]: f.get("synonyms", []) for f in findings}}

    @classmethod
    def from_file(cls, path: str | Path) -> LabelSet:
        path = Path(path)
        data = read_json(path, "label set")
        return cls.from_dict(data, path)


def name_problem(names) -> str | None:
    """What is wrong with a label set's finding names, or None: each must be a non-blank string, and no
    two may be the same once case and spaces are ignored (each becomes a labels-CSV column and a head output)."""
    if not names:
        return "it has no findings"
    for i, n in enumerate(names, 1):
        if not isinstance(n, str) or not n.strip():
            return f"finding {i} has an empty name ({n!r})"
    seen: dict[str, str] = {}
    for n in names:
        key = " ".join(n.split()).casefold()
        if key in seen:
            return f"it repeats the finding name {n!r}" + ("" if seen[key] == n else f" (as {seen[key]!r})")
        seen[key] = n
    return None


def builtin_label_sets() -> list[str]:
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.json"))


def load_label_set(name_or_path: str | Path) -> LabelSet:
    """A built-in label set by name (e.g. "ct-rate") or a JSON file by path."""
    builtin = _BUILTIN_DIR / f"{name_or_path}.json"
    if builtin.is_file():
        return LabelSet.from_file(builtin)
    path = Path(name_or_path)
    if path.is_file():
        return LabelSet.from_file(path)
    raise ConfigError(
        f"no label set {str(name_or_path)!r}: not a built-in ({', '.join(builtin_label_sets())}) nor a file"
    )


def ct_rate() -> LabelSet:
    """CT-RATE's 18 abnormality labels in the dataset's column order."""
    return load_label_set("ct-rate")
