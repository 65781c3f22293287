"""A label set derived from report text (RAD3D's recipe for INSPECT, which has no released labels):
candidate entities → negation-aware counts → synonyms merged into concepts → kept by frequency.

Candidates come from two sources:
- the vocabulary: every finding of the built-in label sets (`engine/label_sets/*.json`, or those named),
  with its synonym list; a vocabulary finding is one concept, its synonyms already merged by hand, and a
  later set's finding whose name is an earlier finding's name or synonym joins that finding;
- noun phrases the vocabulary does not cover: runs of content words between stop words, trigger words,
  punctuation and numbers (RAKE's candidate rule, Rose et al. 2010). A POS chunker would be better, but
  no maintained tagger ships its model in a registry package (spaCy's and NLTK's download theirs at run
  time), so the chunk is then trimmed: leading modifiers (side, degree, size, count) are dropped and a
  trailing word that lemminflect's dictionary knows only as a verb or adjective (or an unknown word with
  an adjective suffix) ends the phrase before it.

Synonyms are merged by a normalised key: the phrase's words lemmatised as nouns (lemminflect, offline:
"emboli" → "embolus", "effusions" → "effusion") after the modifiers are dropped, so "small right pleural
effusions" and "pleural effusion" are one concept; a phrase that contains a vocabulary synonym belongs to
that vocabulary concept, never a new one. A concept is named by its most frequent surface form.

Counting uses the project's extractor (study/findings.py, NegEx-style triggers) on a label set made of the
concepts: a report counts for a concept when the extractor calls it positive (uncertain and negated
mentions do not count; they are reported beside). A noun-phrase concept is kept only when some report
denies it with an absence trigger ("no X", "X was not detected"): findings are what reports say is
absent, anatomy is what they call normal ("the trachea is patent", "the aorta is normal"), and this
keeps anatomy out without a hand list. Every concept with at least `min_count` positive reports is kept.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from lemminflect import getAllLemmas, getLemma
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from tqdm.auto import tqdm

from engine.errors import ConfigError
from engine.labels import LabelSet, builtin_label_sets, load_label_set
from study.findings import FindingExtractor, FindingStatus, report_sentences, trigger_words

DERIVATION_VERSION = "rad3d-derive 1.0 (vocabulary + stop-word chunks, lemminflect keys, absence-trigger filter)"

# Dropped from the front of a chunk: where, how much and how many, never what.
_MODIFIERS = {
    "left", "right", "bilateral", "bilaterally", "both", "upper", "lower", "middle", "anterior", "posterior",
    "medial", "lateral", "basal", "apical", "central", "peripheral", "diffuse", "focal", "small", "large",
    "tiny", "mild", "mildly", "minimal", "minimally", "moderate", "severe", "marked", "slight", "few",
    "several", "multiple", "single", "new", "old", "chronic", "acute", "significant", "prominent", "main",
    "millimetric", "subcentimetric", "scattered", "additional", "approximately", "about", "segmental",
    "subsegmental", "lobar", "proximal", "distal", "hilar", "mediastinal", "paratracheal", "subcarinal",
    "axillary", "supraclavicular", "perihilar",
}
# Report verbs and predicate words that end a chunk, besides sklearn's English stop words and the
# extractor's own triggers and assertion words.
_REPORT_WORDS = {
    "seen", "noted", "observed", "detected", "present", "identified", "evaluated", "included", "reviewed",
    "acquired", "given", "show", "shows", "showed", "appear", "appears", "patent", "open", "midline",
    "limited", "suboptimal", "remarkable", "unremarkable", "normal", "natural", "compatible", "consistent",
    "suggest", "suggests", "suggesting", "measuring", "measures", "measured", "containing", "contains",
    "place", "tip", "size", "sizes", "cm", "mm", "image", "images", "series", "section", "sections",
    "slice", "slices", "study", "examination", "exam", "window", "windows", "contrast", "finding",
    "findings", "impression", "comparison", "evidence", "sign", "signs", "change", "changes",
}
_ADJECTIVE_SUFFIXES = ("al", "ic", "ous", "ive", "ary", "ed", "ar", "ile", "less")
_TOKEN = re.compile(r"[a-z][a-z\-]*|\d+(?:[.,]\d+)?|[^\sa-z\d]")
_MAX_WORDS = 4


@dataclass
class Concept:
    name: str
    synonyms: list[str]
    source: str  # "vocabulary:<label set>" or "noun phrase"
    positive: int = 0  # reports the extractor calls positive
    uncertain: int = 0
    negative: int = 0
    denied: int = 0  # negative by an absence trigger ("no", "not detected"), not a normality one

    def to_json(self) -> dict:
        return {"name": self.name, "synonyms": self.synonyms, "count": self.positive,
                "uncertain": self.uncertain, "negative": self.negative, "source": self.source}


@dataclass
class DerivedLabels:
    """The kept concepts as a label set, the 0/1 matrix of positive reports (volumes × labels), and
    every candidate with its counts (for the printed table)."""

    label_set: LabelSet
    volume_names: list[str]
    matrix: np.ndarray
    kept: list[Concept]
    candidates: list[Concept] = field(default_factory=list)
    how: dict = field(default_factory=dict)  # the settings, written as the set's "derived_by"

    def label_set_json(self) -> dict:
        """engine.labels reads it (extra per-finding keys are ignored there): names, synonyms, counts."""
        return {"name": self.label_set.name, "derived_by": {"version": DERIVATION_VERSION, **self.how},
                "findings": [c.to_json() for c in self.kept]}


@functools.lru_cache(maxsize=65536)
def _noun_lemma(word: str) -> str:
    return getLemma(word, upos="NOUN")[0].lower() if word.isalpha() else word


def _nounish(word: str) -> bool:
    """Could `word` head a noun phrase? Known words: only if the dictionary has them as nouns."""
    known = getAllLemmas(word)
    if known:
        return "NOUN" in known
    return not word.endswith(_ADJECTIVE_SUFFIXES)


class _Chunker:
    def __init__(self, vocabulary: LabelSet):
        self.stop = set(ENGLISH_STOP_WORDS) | _REPORT_WORDS | trigger_words()
        # Each vocabulary synonym as its noun-lemmatised words ("A ... B" as A's words then B's: either part
        # alone would be too loose, "heart" or "size").
        self.vocab_keys: set[tuple[str, ...]] = set()
        for name in vocabulary.names:
            for syn in (name, *vocabulary.synonyms[name]):
                parts = [p.split() for p in syn.lower().split("...")]
                words = [w for p in parts for w in p]
                self.vocab_keys.add(self.key(words))

    @staticmethod
    def key(words) -> tuple[str, ...]:
        return tuple(_noun_lemma(w) for w in words)

    def covered(self, words: list[str]) -> bool:
        """Does the chunk hold a vocabulary synonym (as a contiguous run of lemmas)?"""
        lemmas = self.key(words)
        return any(lemmas[i:j] in self.vocab_keys for i in range(len(lemmas)) for j in range(i + 1, len(lemmas) + 1))

    def chunks(self, sentence: str) -> list[list[str]]:
        runs, run = [], []
        for tok in _TOKEN.findall(sentence.lower()):
            if tok[0].isalpha() and len(tok) > 2 and tok not in self.stop:  # words, hyphenated ones too
                run.append(tok)
            else:
                runs.append(run)
                run = []
        runs.append(run)
        out = []
        for run in runs:
            while run and run[0] in _MODIFIERS:
                run = run[1:]
            cut = next((i for i, w in enumerate(run) if not _nounish(w) and i > 0 and _nounish(run[i - 1])), None)
            if cut is not None:
                run = run[:cut]
            while run and not _nounish(run[-1]):
                run = run[:-1]
            if run and len(run) <= _MAX_WORDS and not self.covered(run):
                out.append(run)
        return out


def vocabulary(names: list[str] | None = None) -> tuple[LabelSet, dict[str, str]]:
    """One label set of the named (default: every built-in) sets' findings, and which set each came from.
    A finding of a later set is merged into an earlier set's finding (synonyms united, the first name kept)
    when its name, noun-lemmatised, is that finding's name or one of its synonyms: "Pulmonary nodules" in
    one set and "Lung nodule" with the synonym "pulmonary nodule" in another are one concept."""
    order: list[str] = []
    synonyms: dict[str, list[str]] = {}
    source: dict[str, str] = {}
    owner: dict[tuple, str] = {}  # lemma key of a name or synonym -> the finding of an earlier set it names
    for set_name in names or builtin_label_sets():
        ls = load_label_set(set_name)
        fresh: dict[tuple, str] = {}
        for n in ls.names:
            name = owner.get(_key(n), n)
            if name not in synonyms:
                order.append(name)
                synonyms[name] = []
                source[name] = f"vocabulary:{ls.name}"
            synonyms[name] += [x for x in (n, *ls.synonyms[n]) if x != name and x not in synonyms[name]]
            for x in (n, *ls.synonyms[n]):
                fresh.setdefault(_key(x), name)
        for k, v in fresh.items():  # within one set, findings stay apart even when they share a synonym
            owner.setdefault(k, v)
    return LabelSet("vocabulary", tuple(order), {n: tuple(x) for n, x in synonyms.items()}), source


def _phrase_concepts(texts: list[str], chunker: _Chunker, min_count: int) -> list[Concept]:
    """Noun-phrase concepts (not covered by the vocabulary) named in at least `min_count` reports."""
    surface: dict[tuple, Counter] = {}
    reports: Counter = Counter()
    for text in texts:
        seen = set()
        for sentence in report_sentences(text):
            for words in chunker.chunks(sentence):
                key = chunker.key(words)
                surface.setdefault(key, Counter())[" ".join(words)] += 1
                seen.add(key)
        reports.update(seen)
    concepts = []
    for key, n in reports.items():
        if n >= min_count:
            forms = surface[key]
            name = forms.most_common(1)[0][0]
            concepts.append(Concept(name[0].upper() + name[1:], sorted(forms, key=lambda f: (-forms[f], f)),
                                    "noun phrase"))
    return concepts


def _count(texts: list[str], concepts: list[Concept], vocab: LabelSet, progress: bool = False) -> np.ndarray:
    """Fill each concept's counts with the extractor's statuses; return the positive matrix."""
    names = tuple(c.name for c in concepts)
    synonyms = {c.name: tuple(c.synonyms if c.source == "noun phrase" else vocab.synonyms[c.name]) for c in concepts}
    extractor = FindingExtractor(LabelSet("candidates", names, synonyms))
    matrix = np.zeros((len(texts), len(concepts)), dtype=np.int8)
    index = {n: i for i, n in enumerate(names)}
    for row, text in enumerate(tqdm(texts, desc="counting", unit="report", disable=not progress, leave=False)):
        statuses: dict[str, set] = {}
        denied: set[str] = set()
        for m in extractor.mentions(text):
            statuses.setdefault(m.finding, set()).add(m.status)
            if m.status == FindingStatus.NEGATIVE and m.trigger and not _is_normality(m.trigger):
                denied.add(m.finding)
        for name, found in statuses.items():
            c = concepts[index[name]]
            if FindingStatus.POSITIVE in found:
                c.positive += 1
                matrix[row, index[name]] = 1
            elif FindingStatus.UNCERTAIN in found:
                c.uncertain += 1
            else:
                c.negative += 1
        for name in denied:
            concepts[index[name]].denied += 1
    return matrix


def _is_normality(trigger: str) -> bool:
    return any(w in trigger for w in ("normal", "natural", "unremarkable", "within"))


def derive_labels(volume_names: list[str], texts: list[str], *, min_count: int, name: str = "derived",
                  vocabulary_sets: list[str] | None = None, progress: bool = False) -> DerivedLabels:
    """The label set of `texts` (one report per volume): see the module docstring."""
    if min_count < 1:
        raise ConfigError(f"--min-count must be at least 1, got {min_count}")
    vocab, source = vocabulary(vocabulary_sets)
    chunker = _Chunker(vocab)
    concepts = [Concept(n, list(vocab.synonyms[n]), source[n]) for n in vocab.names]
    taken = {n.casefold() for n in vocab.names}
    concepts += [c for c in _phrase_concepts(texts, chunker, min_count) if c.name.casefold() not in taken]
    matrix = _count(texts, concepts, vocab, progress)
    keep = [i for i, c in enumerate(concepts)
            if c.positive >= min_count and (c.source != "noun phrase" or c.denied > 0)]
    if not keep:
        best = max(concepts, key=lambda c: c.positive, default=None)
        most = f" (the most frequent, {best.name!r}, is positive in {best.positive})" if best else ""
        raise ConfigError(f"--min-count {min_count} leaves no label: no candidate is positive in {min_count} "
                          f"of the {len(texts)} reports{most}")
    kept = [concepts[i] for i in keep]
    label_set = LabelSet(name, tuple(c.name for c in kept), {c.name: tuple(c.synonyms) for c in kept})
    how = {"min_count": min_count, "reports": len(texts), "vocabulary": list(vocabulary_sets or builtin_label_sets()),
           "counted": "reports the extractor calls positive (uncertain and negated mentions excluded)"}
    return DerivedLabels(label_set, list(volume_names), matrix[:, keep], kept, concepts, how)


@dataclass
class TruthRow:
    finding: str  # a column of the reference labels
    label: str | None  # the derived label that names it, None if none does
    truth_positive: int
    derived_positive: int
    both: int

    @property
    def precision(self) -> float | None:
        return self.both / self.derived_positive if self.label and self.derived_positive else None

    @property
    def recall(self) -> float | None:
        return self.both / self.truth_positive if self.label and self.truth_positive else None


def _key(text: str) -> tuple[str, ...]:
    return tuple(_noun_lemma(w) for w in re.findall(r"[a-z]+", text.lower()) if w not in _MODIFIERS)


def match_truth(derived: DerivedLabels, truth: LabelSet) -> dict[str, str]:
    """{reference finding: derived label} by words only, never by agreement in the data: the same name, or
    the derived name's lemma key equal to the key of the finding's name or one of its synonyms."""
    out = {}
    for finding in truth.names:
        keys = {_key(s) for s in (finding, *truth.synonyms.get(finding, ()))}
        for label in derived.label_set.names:
            if label.casefold() == finding.casefold() or _key(label) in keys:
                out[finding] = label
                break
    return out


def compare_with_truth(derived: DerivedLabels, truth: LabelSet, truth_matrix: np.ndarray) -> list[TruthRow]:
    """Per reference finding: the derived label naming it and their agreement over the volumes."""
    matched = match_truth(derived, truth)
    rows = []
    for j, finding in enumerate(truth.names):
        t = truth_matrix[:, j].astype(bool)
        label = matched.get(finding)
        d = derived.matrix[:, derived.label_set.index(label)].astype(bool) if label else np.zeros_like(t)
        rows.append(TruthRow(finding, label, int(t.sum()), int(d.sum()), int((t & d).sum())))
    return rows
