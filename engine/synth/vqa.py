"""Questions about a phantom from its ground truth (phantom_truth.json), in M3D-VQA's two forms.

Every question is made once and given both forms where both make sense: closed (four choices,
exactly one right, the right letter drawn from a shuffled A-D cycle per volume so letters spread
evenly) and open (the same question, the answer as text). What the truth supports, per type:

- presence: "Does this CT show {finding}?" once with a yes and once with a no answer per volume
  (a normal phantom's yes is "Is this chest CT free of abnormal findings?"), so yes/no is balanced
  exactly; closed also "Which of the following abnormalities is present?" (one planted, three not).
  Closed yes/no items carry two fillers that are never right ("Cannot be determined", "Not applicable").
- side: right / left / both sides, for findings planted on a side (nodule, consolidation, opacity,
  atelectasis, fibrotic bands, bronchiectasis, pleural effusion, device); the always-bilateral
  patterns (emphysema, mosaic attenuation, septal and peribronchial thickening) are not asked.
- size: a class of four mm ranges of the planted measurement (nodule diameter, effusion thickness,
  largest node's short axis, hernia and consolidation diameter).
- count: enlarged nodal stations, calcified coronary arteries, ground-glass opacities, abnormalities.
- location: the lobe of a one-lobe lung finding; the nodal station of one-station lymphadenopathy;
  the artery of one-artery coronary calcification.

Not supported: M3D's plane (axial/sagittal/coronal) and phase/window questions. Every phantom is an
axial, unenhanced volume, so their answer is a constant that tests nothing but a prior.

Deterministic: each volume's questions come from numpy's default_rng([seed, crc32(VolumeName)]),
so they do not depend on which other volumes are written.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DatasetError
from engine.labels import ct_rate
from engine.synth.domains import DEFAULT_DOMAIN
from engine.synth.findings import LOBE_NAMES, LOBE_SIDE
from engine.vqa import FORMS, LETTERS, QUESTION_TYPES, VQA_FILE, VqaItem, write_vqa_csv

YES, NO = "Yes", "No"
YES_NO_FILLERS = ("Cannot be determined", "Not applicable")
SIDES = {"right": "Right", "left": "Left", "bilateral": "Both sides"}
SIDE_CHOICES = ("Right", "Left", "Both sides", "Midline")
# Findings a phantom plants on one side or both; the others are midline or always bilateral.
SIDED = ("Medical material", "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela",
         "Pleural effusion", "Consolidation", "Bronchiectasis")
_COUNTABLE = {"Medical material", "Hiatal hernia", "Lung nodule", "Pleural effusion", "Pericardial effusion"}
# finding -> (truth key, what it measures, three class edges in mm)
SIZE_CLASSES = {
    "Lung nodule": ("size_mm", "diameter", (10, 15, 20)),
    "Pleural effusion": ("size_mm", "greatest thickness", (20, 30, 40)),
    "Pericardial effusion": ("thickness_mm", "greatest thickness", (10, 15, 20)),
    "Lymphadenopathy": ("size_mm", "short axis of the largest node", (15, 20, 25)),
    "Hiatal hernia": ("size_mm", "largest diameter", (45, 50, 55)),
    "Consolidation": ("size_mm", "mean diameter", (70, 80, 90)),
}
STATIONS = ("right paratracheal", "subcarinal", "prevascular", "right hilar", "left hilar")
ARTERIES = ("left anterior descending", "circumflex", "right coronary", "left main")
LOBED = ("Lung nodule", "Consolidation", "Lung opacity", "Pulmonary fibrotic sequela", "Bronchiectasis", "Atelectasis")

TEMPLATES = {
    "yes_no": ("Does this chest CT show {a}{p}?", "Is there {a}{p} in this scan?", "Can {a}{p} be seen on this CT?",
               "Is there evidence of {a}{p} in this image?"),
    "normal": ("Is this chest CT free of abnormal findings?", "Is this scan normal?",
               "Does this CT show no abnormality at all?"),
    "which": ("Which of the following abnormalities is present in this CT?",
              "Which of these findings can be seen in the scan?", "Which abnormality does this chest CT show?"),
    "side": ("On which side is the {p}?", "Which side of the chest shows the {p}?",
             "Is the {p} on the right, on the left or on both sides?", "Where is the {p}: right, left or both sides?"),
    "size": ("What is the {dim} of the {p}?", "How large is the {p} ({dim})?",
             "Which range does the {dim} of the {p} fall in?"),
    "lobe": ("In which lobe is the {p}?", "Which lobe contains the {p}?", "Where in the lungs is the {p} located?"),
    "station": ("Where are the enlarged lymph nodes?", "Which nodal station shows lymphadenopathy?",
                "In which station is the enlarged lymph node?"),
    "artery": ("Which coronary artery is calcified?", "Where is the coronary artery calcification?",
               "Which coronary artery shows wall calcification?"),
    "count_stations": ("How many nodal stations show enlarged lymph nodes?",
                       "In how many lymph node stations is there lymphadenopathy?"),
    "count_arteries": ("How many coronary arteries show calcification?",
                       "How many coronary arteries are calcified?"),
    "count_opacities": ("How many ground-glass opacities are there?", "How many areas of lung opacity are seen?"),
    "count_findings": ("How many different abnormalities does this chest CT show?",
                       "How many distinct abnormal findings are present in this scan?"),
}


@dataclass(frozen=True)
class Question:
    """One question before it takes a form: the right answer and the wrong ones a closed form draws from."""

    question_type: str
    question: str
    answer: str
    wrong: tuple[str, ...]
    forms: tuple[str, ...] = FORMS


def phrase(finding: str) -> str:
    return "medical device" if finding == "Medical material" else finding.lower()


def _article(finding: str) -> str:
    return "a " if finding in _COUNTABLE else ""


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _presence(truth: dict[str, dict], rng) -> list[Question]:
    names = ct_rate().names
    present = [n for n in names if n in truth]
    absent = [n for n in names if n not in truth]

    def ask(finding: str, yes: bool) -> Question:
        q = _pick(rng, TEMPLATES["yes_no"]).format(a=_article(finding), p=phrase(finding))
        return Question("presence", q, YES if yes else NO, (NO if yes else YES, *YES_NO_FILLERS))

    normal = _pick(rng, TEMPLATES["normal"])
    yes = ask(_pick(rng, present), True) if present else Question("presence", normal, YES, (NO, *YES_NO_FILLERS))
    no = ask(_pick(rng, absent), False) if absent else Question("presence", normal, NO, (YES, *YES_NO_FILLERS))
    out = [yes, no]
    if present and len(absent) >= 3:
        out.append(Question("presence", _pick(rng, TEMPLATES["which"]), _pick(rng, present), tuple(absent),
                            forms=("closed",)))
    return out


def side_of(finding: str, t: dict) -> str | None:
    """right, left or bilateral from the truth (bronchiectasis records lobes only)."""
    if "side" in t:
        return t["side"]
    sides = {LOBE_SIDE[x] for x in t.get("lobes", ())}
    return None if not sides else ("bilateral" if len(sides) == 2 else sides.pop())


def _side(truth: dict[str, dict], rng) -> list[Question]:
    sided = [n for n in SIDED if n in truth and side_of(n, truth[n]) in SIDES]
    if not sided:
        return []
    finding = _pick(rng, sided)
    answer = SIDES[side_of(finding, truth[finding])]
    q = _pick(rng, TEMPLATES["side"]).format(p=phrase(finding))
    return [Question("side", q, answer, tuple(c for c in SIDE_CHOICES if c != answer))]


def size_classes(edges: tuple[float, float, float]) -> tuple[str, str, str, str]:
    a, b, c = edges
    return f"under {a} mm", f"{a} to {b} mm", f"{b} to {c} mm", f"{c} mm or more"


def size_class(value: float, edges: tuple[float, float, float]) -> str:
    """The class of `value` (lower edge included): 12.0 with edges (10, 15, 20) → "10 to 15 mm"."""
    return size_classes(edges)[int(np.searchsorted(edges, float(value), side="right"))]


def _size(truth: dict[str, dict], rng) -> list[Question]:
    sized = [n for n in SIZE_CLASSES if n in truth and SIZE_CLASSES[n][0] in truth[n]]
    if not sized:
        return []
    finding = _pick(rng, sized)
    key, dim, edges = SIZE_CLASSES[finding]
    answer = size_class(truth[finding][key], edges)
    q = _pick(rng, TEMPLATES["size"]).format(p=phrase(finding), dim=dim)
    return [Question("size", q, answer, tuple(c for c in size_classes(edges) if c != answer))]


def _numbers(answer: int, low: int, rng) -> tuple[str, ...]:
    """Three wrong counts: the answer sits at a random place in a run of four consecutive numbers ≥ low."""
    start = max(low, answer - int(rng.integers(4)))
    return tuple(str(k) for k in range(start, start + 4) if k != answer)


def _count(truth: dict[str, dict], rng) -> list[Question]:
    counts = {"count_findings": (len(truth), 0)}
    if "Lymphadenopathy" in truth:
        counts["count_stations"] = (len(truth["Lymphadenopathy"]["stations"]), 1)
    if "Coronary artery wall calcification" in truth:
        counts["count_arteries"] = (len(truth["Coronary artery wall calcification"]["arteries"]), 1)
    if "Lung opacity" in truth:
        counts["count_opacities"] = (len(truth["Lung opacity"]["parts"]), 1)
    kind = _pick(rng, sorted(counts))
    answer, low = counts[kind]
    return [Question("count", _pick(rng, TEMPLATES[kind]), str(answer), _numbers(answer, low, rng))]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def lobe_of(finding: str, t: dict) -> str | None:
    """The one lobe a lung finding was planted in (None when it spans several)."""
    lobes = [t["lobe"]] if "lobe" in t else list(t.get("lobes", ()))
    if finding == "Atelectasis" and t.get("side") in ("right", "left"):
        lobes = ["RLL" if t["side"] == "right" else "LLL"]
    return lobes[0] if len(set(lobes)) == 1 else None


def _location(truth: dict[str, dict], rng) -> list[Question]:
    options: list[Question] = []
    for finding in LOBED:
        lobe = lobe_of(finding, truth[finding]) if finding in truth else None
        if lobe:
            q = _pick(rng, TEMPLATES["lobe"]).format(p=phrase(finding))
            options.append(Question("location", q, _capital(LOBE_NAMES[lobe]),
                                    tuple(_capital(LOBE_NAMES[x]) for x in LOBE_NAMES if x != lobe)))
    nodes = truth.get("Lymphadenopathy")
    if nodes and len(nodes["stations"]) == 1:
        station = nodes["stations"][0]
        options.append(Question("location", _pick(rng, TEMPLATES["station"]), _capital(station),
                                tuple(_capital(s) for s in STATIONS if s != station)))
    coronary = truth.get("Coronary artery wall calcification")
    if coronary and len(coronary["arteries"]) == 1:
        artery = coronary["arteries"][0]
        options.append(Question("location", _pick(rng, TEMPLATES["artery"]), _capital(artery) + " artery",
                                tuple(_capital(x) + " artery" for x in ARTERIES if x != artery)))
    return [_pick(rng, options)] if options else []


MAKERS: dict[str, Callable[[dict[str, dict], np.random.Generator], list[Question]]] = {
    "presence": _presence, "side": _side, "size": _size, "count": _count, "location": _location,
}
assert tuple(MAKERS) == QUESTION_TYPES


def volume_rng(volume_name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(volume_name.encode())])


def volume_items(volume_name: str, findings: list[dict], seed: int,
                 types: Iterable[str] = QUESTION_TYPES) -> list[VqaItem]:
    """The items of one volume from its planted findings (phantom_truth.json's `findings` list)."""
    rng = volume_rng(volume_name, seed)
    truth = {f["finding"]: f for f in findings}
    questions = [q for t in types for q in MAKERS[t](truth, rng)]
    n_closed = sum("closed" in q.forms for q in questions)
    letters = [LETTERS[i] for _ in range(0, n_closed, 4) for i in rng.permutation(4)][:n_closed]
    items = []
    for q in questions:
        if "closed" in q.forms:
            letter = letters.pop(0)
            wrong = [q.wrong[i] for i in rng.choice(len(q.wrong), size=3, replace=False)]
            wrong.insert(LETTERS.index(letter), q.answer)
            items.append(VqaItem(volume_name, q.question_type, "closed", q.question, tuple(wrong), q.answer, letter))
        if "open" in q.forms:
            items.append(VqaItem(volume_name, q.question_type, "open", q.question, None, q.answer, None))
    return items


def generate_vqa(truth: dict, seed: int | None = None, types: Iterable[str] = QUESTION_TYPES) -> list[VqaItem]:
    """Items for every case of a phantom_truth.json document (seed: the dataset's own unless given)."""
    if truth.get("domain", DEFAULT_DOMAIN) != DEFAULT_DOMAIN:
        # The question makers know the CT-RATE-like findings' truth (sides, lobes, sizes) only; asking
        # another domain's cases about those findings would state false answers.
        raise ValueError(f"questions are made for the {DEFAULT_DOMAIN} domain only, not {truth['domain']}")
    seed = int(truth.get("seed", 0) if seed is None else seed)
    types = tuple(types)
    unknown = [t for t in types if t not in MAKERS]
    if unknown:
        raise ValueError(f"unknown question types {unknown} (known: {', '.join(MAKERS)})")
    return [item for name, case in truth["cases"].items() for item in volume_items(name, case["findings"], seed, types)]


def truth_file(root: str | Path) -> Path:
    """phantom_truth.json of a phantom dataset folder (flat: its root; CT-RATE's tree: its dataset/ folder)."""
    root = Path(root)
    for candidate in (root / "phantom_truth.json", root / "dataset" / "phantom_truth.json"):
        if candidate.is_file():
            return candidate
    raise DatasetError("no phantom_truth.json: questions are made from a phantom dataset's ground truth "
                       "(`rad3d synth` writes it)", root)


def build_vqa(root: str | Path, seed: int | None = None, types: Iterable[str] = QUESTION_TYPES
              ) -> tuple[Path, list[VqaItem]]:
    """(Re)write vqa.csv beside a phantom dataset's phantom_truth.json; returns its path and items."""
    path = truth_file(root)
    try:
        truth = json.loads(path.read_text())
        cases = truth["cases"]
        _ = [c["findings"] for c in cases.values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"not a phantom truth file ({type(err).__name__}: {err})", path) from None
    try:
        items = generate_vqa(truth, seed, types)
    except ValueError as err:
        raise DatasetError(str(err), path) from None
    return write_vqa_csv(items, path.with_name(VQA_FILE)), items
