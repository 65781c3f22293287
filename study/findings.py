"""Rule-based extraction of the label set's findings from report text: for each finding one of
positive / negative / uncertain / not mentioned. Written for chest CT reports as CT-RATE words them
(and for the phantoms' reports); EXTRACTOR_VERSION names the rules below for metric cards.

Rules, sentence by sentence (a sentence ends at . ! ? before a space, a line break, a `"` or a `•`):
1. Finding phrases come from the label set's synonyms, longest first, each token claimed once.
   Plurals match ("nodules", "opacities", "sequelae"); "pleural and pericardial effusion" mentions
   both. A synonym written "A ... B" matches A, then B within four tokens that are not a comma,
   a conjunction or a terminator, so degree and qualifier words may sit between organ and
   finding ("the heart is mildly enlarged", "heart size increased"); a trigger between the parts
   governs the match ("the heart is not enlarged", "the heart is possibly enlarged").
2. Attribute phrases (a synonym with a size word and no abnormal word: "heart size", "CTR",
   "cardiothoracic ratio") only ever say a finding is absent: they count when negated
   ("heart size is normal") and are dropped otherwise ("heart size 12 cm").
3. Anatomical scope (CT-RATE's findings, `_SCOPES`): a mention is dropped when a word placing it in
   another organ (between the same commas, or up to five tokens before it) is nearer to it than
   any word of the sentence placing it in its own (a nodule in the thyroid, liver, adrenal or skin
   is not a lung nodule; emphysema in a muscle is subcutaneous; calcification in the thyroid is
   not arterial). Generic vascular words ("calcification",
   "plaque", "atheroma") need a vessel in the sentence: a coronary word makes them coronary, an
   aortic or other arterial word arterial, both both; "atherosclerosis"/"atheroma" with no vessel
   at all is arterial. "nodular" before "infiltration"/"consolidation" describes that, not a nodule.
4. Status. NegEx-style triggers with a direction; the nearest trigger in scope wins:
   - pre-triggers ("no", "without", "free of"; hedges "possible", "potentially", "suspicious for",
     "likely", "may be") reach forward over a list ("no A, B or C") until a terminator ("but",
     "however", ";", "(") or, once a finding was passed, the verb that closes its clause; a
     negation before a hedge wins ("no suspicious nodule" is negative);
   - post-triggers ("was not detected", "is normal", "cannot be excluded", "is likely") reach back
     over the findings of their own clause, stopping at a comma, a terminator or an assertion verb
     ("Atelectasis is seen and effusion was not detected" negates only the effusion) except over
     a short comma list closed by a plural verb ("A, B were not detected"); a "?"
     right after a finding ("(cyst?)") makes it uncertain;
   - "normal", "natural", "absent" (negative) and "versus" (uncertain) work either side within
     three tokens;
   - pseudo-negations ("no change in", "no significant difference") are claimed and ignored.
   Finding-specific negations: lymph nodes that are "millimetric", "did not reach pathological
   size", "not in pathological size", "less than 1 cm" are negative for lymphadenopathy.
5. A report's status per finding: positive if any mention is positive, else uncertain if any is
   uncertain, else negative if any is negative, else not mentioned.

Why not a library: negspacy negates the entities of a spaCy NER model (a download); medspaCy 1.3's ConText
is documented to run on a blank spaCy tokenizer, but it would bring spaCy and its sentence
splitter into the runtime for the smaller half of the problem (triggers), and was not tried here.
Phrase vocabulary, anatomical scope and CT-RATE's post-posed negations ("was not observed in
pathological size") would be ours either way; tests/test_extractor_sentences.py is the yardstick
any replacement must meet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from engine.labels import LabelSet, ct_rate

EXTRACTOR_VERSION = "rad3d-findings 2.0 (rules: CT-RATE phrasing, anatomical scope, hedges)"


class FindingStatus(str, Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not mentioned"


_PRE_NEG = ["no", "without", "absence of", "free of", "negative for", "neither", "nor", "not",
            "no evidence of", "no sign of", "no signs of", "no findings of", "rather than",
            "exclusion of", "never", "no longer", "resolution of"]
_POST_NEG = ["not observed", "not detected", "not seen", "not identified", "not noted", "not present",
             "not visualized", "not visualised", "not evident", "not found", "not demonstrated", "not apparent",
             "not observed in", "not detected in", "not determined", "not found in", "no longer seen",
             "no longer present", "has resolved", "have resolved", "disappeared", "has disappeared",
             "excluded", "resolved", "within normal limits", "within normal range", "within the normal range",
             "within normal", "in normal range", "is normal", "are normal", "was normal", "were normal",
             "is unremarkable", "are unremarkable", "is natural", "are natural", "were natural", "was natural",
             "appear natural", "appears natural", "appear normal", "appears normal", "ruled out"]
# Either side, close by: "normal heart size" and "heart size normal", "absent effusion", "effusion absent".
_BOTH_NEG = ["normal", "absent", "unremarkable", "natural"]
_PRE_UNC = ["possible", "possibly", "probable", "probably", "potential", "potentially", "suspicious for",
            "suspicious", "suspicion of", "suspected", "questionable", "equivocal", "may represent",
            "might represent", "could represent", "may be", "might be", "could be", "may", "might", "likely",
            "cannot exclude", "can not exclude", "could not exclude", "cannot rule out", "can not rule out",
            "suggestive of", "concerning for", "differential diagnosis", "consider",
            "borderline", "doubtful", "presumed", "query", "rule out", "thought to be", "questionable for",
            "cannot be distinguished from", "indeterminate"]
_POST_UNC = ["cannot be excluded", "can not be excluded", "could not be excluded", "not excluded",
             "cannot be ruled out", "can not be ruled out", "could not be ruled out", "not ruled out",
             "is suspected", "are suspected", "was suspected", "were suspected", "is possible", "is probable",
             "is likely", "are likely", "is questionable", "is considered", "are considered", "may be present",
             "is not excluded", "is equivocal", "is suspicious", "are suspicious", "is possibly", "are possibly",
             "is probably", "are probably", "possibly present", "probably present", "likely present", "?"]
# Either side, close by: "atelectasis versus consolidation".
_BOTH_UNC = ["versus", "vs"]
# Phrases that look like negations but negate something else ("no change in the nodule").
_PSEUDO = ["no change", "no significant change", "no interval change", "no increase", "no decrease",
           "not only", "no significant interval change", "without change", "without significant change",
           "no difference", "no significant difference", "not differ", "does not differ", "no progression",
           "no significant size difference", "no regression", "lymph node station", "lymph node stations"]
_TERMINATORS = {"but", "however", "although", "though", "except", "whereas", "while", "which", "apart", "aside",
                "nevertheless", "yet", ";", ":", "(", "?"}
_ASSERTIONS = {"seen", "observed", "detected", "noted", "identified", "present", "visualized", "visualised",
               "demonstrated", "shows", "show", "showed", "reveals", "revealed", "appears", "found", "evident",
               "measuring", "measures", "containing", "contains", "is", "are", "was", "were", "has", "have"}
_COPULAS = {"is", "are", "was", "were", "has", "have"}
_NEGATION_WORDS = {"no", "not", "without", "nor", "neither"}
_CONJUNCTIONS = {"and", "or", "nor", ","}
_GAP = 4  # tokens allowed between the parts of an "A ... B" synonym
_QUESTION_REACH = 3  # a "?" hedges a finding that ends at most this many tokens before it
_VETO_REACH = 5  # a veto word counts in the mention's comma segment, or this close before it

# A phrase with one of these and none of _ABNORMAL_WORDS names an attribute ("heart size").
_ATTRIBUTE_WORDS = {"size", "sizes", "dimension", "dimensions", "ratio", "index", "ctr", "contour"}
_ABNORMAL_WORDS = {"enlarged", "enlargement", "increased", "increase", "large", "larger", "cardiomegaly"}

_TOKEN = re.compile(r"n't\b|[a-z0-9]+(?=n't\b)|[a-z0-9]+|[,;:(?]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|(?<=[a-z])\.(?=[A-Z])|\"+|•")


def _tokens(text: str) -> list[str]:
    return [t.group(0) if t.group(0) != "n't" else "not" for t in _TOKEN.finditer(text.lower())]


def _spans(text: str) -> list[tuple[str, int, int]]:
    """Tokens with their character spans in `text`."""
    return [("not" if t.group(0) == "n't" else t.group(0), t.start(), t.end()) for t in _TOKEN.finditer(text.lower())]


def _base_forms(token: str) -> set[str]:
    """The words a token may be a form of: 'nodules' → nodule, 'opacities' → opacity,
    'sequelae' → sequela, 'prostheses' → prosthesis."""
    forms = {token}
    if token.endswith("s"):
        forms.add(token[:-1])
    if token.endswith("es"):
        forms |= {token[:-2], token[:-2] + "is"}
    if token.endswith("ies"):
        forms.add(token[:-3] + "y")
    if token.endswith("e"):
        forms.add(token[:-1])
    return forms


def _word_matches(token: str, word: str) -> bool:
    return word in _base_forms(token)


@dataclass(frozen=True)
class Scope:
    """Where a finding lives, as words in its sentence (see the module docstring, rule 3).

    anchors: words placing a mention in the finding's organ; required: a phrase without an anchor
    of its own needs one in the sentence (unless it has a `strong` word and no veto is present);
    vetoes: words placing it elsewhere, dropping it when nearer than every anchor; excluded_by:
    words that, with no anchor in the sentence, drop it (weak_anchors do not count beside them:
    "calcified plaques in all three vessels" of a coronary sentence); same_segment: anchors count only between
    the commas around the mention ("stent in the coronary arteries, calcification in the aorta"); not_before:
    words that, right after the phrase, make it an adjective of something else; normal_cues:
    phrases in the same clause that make a mention negative."""

    anchors: frozenset = frozenset()
    required: bool = False
    strong: frozenset = frozenset()
    vetoes: frozenset = frozenset()
    not_before: frozenset = frozenset()
    normal_cues: tuple = ()
    excluded_by: frozenset = frozenset()
    weak_anchors: frozenset = frozenset()
    same_segment: bool = False


_ORGANS_ELSEWHERE = {"thyroid", "liver", "hepatic", "adrenal", "adrenals", "surrenal", "kidney", "kidneys", "renal",
                     "spleen", "splenic", "pancreas", "pancreatic", "skin", "cutaneous", "subcutaneous", "breast",
                     "breasts", "gallbladder", "bone", "bones", "vertebra", "vertebrae", "vertebral", "rib", "ribs",
                     "muscle", "muscles", "axilla", "axillary", "scalp", "prostate", "uterus", "ovary", "testis"}
_LUNG = {"lung", "lungs", "pulmonary", "lobe", "lobes", "lingula", "lingular", "parenchyma", "parenchymal", "fissure",
         "fissures", "segment", "segments", "subpleural", "apex", "apexes", "apices", "apical", "perifissural",
         "hilum", "hilar", "pleural", "bronchi", "bronchial", "centrilobular", "paraseptal", "panlobular",
         "hemithorax"}
_CORONARY = {"coronary", "lad", "circumflex", "rca", "cx"}
_ARTERIAL = {"aorta", "aortic", "aortas", "arterial", "artery", "arteries", "vascular", "vessel", "vessels", "iliac",
             "carotid", "subclavian", "brachiocephalic", "supraaortic", "supraaortal", "arch", "vasculature"}
_NOT_VASCULAR = {"thyroid", "liver", "hepatic", "nodule", "nodules", "nodular", "node", "nodes", "lymph", "pleural",
                 "pleura", "valve", "valvular", "mitral", "annulus", "annular", "costal", "cartilage", "cartilages",
                 "kidney", "renal", "gallbladder", "spleen", "splenic", "pancreas", "granuloma", "parenchymal",
                 "parenchyma", "breast", "prostate", "pericardial", "disc", "ligament", "lung", "lungs", "lobe",
                 "stone", "tendon", "bone", "bones"}
_LYMPH_NORMAL = ("millimetric", "subcentimetric", "subcentimeter", "sub centimetric", "did not reach",
                 "not reach", "not reaching", "not in pathological", "not of pathological", "non pathological",
                 "nonpathological", "not pathological", "less than 1 cm", "smaller than 1 cm", "less than 10 mm",
                 "smaller than 10 mm", "below 1 cm", "below 10 mm", "under 1 cm", "normal size", "normal sized",
                 "normal in size", "not enlarged", "below pathological", "short axis below", "without pathological")

_SCOPES = {
    "Lung nodule": Scope(anchors=frozenset(_LUNG), vetoes=frozenset(_ORGANS_ELSEWHERE | {"lymph"}),
                         not_before=frozenset({"infiltration", "infiltrations", "consolidation", "consolidations",
                                               "thickening", "thickenings", "opacity", "opacities", "pattern",
                                               "infiltrative"})),
    "Emphysema": Scope(anchors=frozenset(_LUNG),
                       vetoes=frozenset(_ORGANS_ELSEWHERE | {"pectoralis", "pectoral", "fat", "fatty", "tissue",
                                                            "tissues", "mediastinal", "mediastinum", "soft",
                                                            "infraclavicular", "neck"})),
    "Lung opacity": Scope(anchors=frozenset(_LUNG),
                          vetoes=frozenset(_ORGANS_ELSEWHERE | {"fat", "fatty", "mediastinal", "mediastinum",
                                                               "paraduodenal", "soft", "tissue", "tissues", "node",
                                                               "nodes", "fracture", "sclerotic", "esophagus",
                                                               "esophageal"})),
    "Consolidation": Scope(anchors=frozenset(_LUNG), vetoes=frozenset({"fracture", "bone", "bones", "rib", "ribs",
                                                                       "callus", "vertebra"})),
    "Pulmonary fibrotic sequela": Scope(anchors=frozenset(_LUNG),
                                        vetoes=frozenset(_ORGANS_ELSEWHERE | {"fracture", "operation", "surgery"})),
    "Atelectasis": Scope(anchors=frozenset(_LUNG)),
    "Pleural effusion": Scope(anchors=frozenset({"pleural", "pleura", "hemithorax", "hemithoraces", "thorax"}),
                              vetoes=frozenset({"pericardial", "pericardium", "joint", "subdural", "abdominal",
                                               "peritoneal", "ascites"})),
    "Lymphadenopathy": Scope(anchors=frozenset({"mediastinal", "mediastinum", "hilar", "hilum", "paratracheal",
                                                "subcarinal", "prevascular", "aortopulmonary", "axillary", "axilla",
                                                "supraclavicular", "precarinal", "paraaortic", "station"}),
                             vetoes=frozenset({"intrapulmonary", "subpleural", "perifissural", "fissure"}),
                             normal_cues=_LYMPH_NORMAL),
    "Medical material": Scope(vetoes=frozenset({"bile", "biliary", "choledoch", "choledochal", "duct"})),
    "Arterial wall calcification": Scope(anchors=frozenset(_ARTERIAL), required=True,
                                         strong=frozenset({"atherosclerosis", "atherosclerotic", "atheroma",
                                                           "atheromatous"}),
                                         vetoes=frozenset(_NOT_VASCULAR), excluded_by=frozenset(_CORONARY),
                                         weak_anchors=frozenset({"vessel", "vessels", "vascular", "vasculature"})),
    "Coronary artery wall calcification": Scope(anchors=frozenset(_CORONARY), required=True, same_segment=True,
                                                vetoes=frozenset(_NOT_VASCULAR)),
}


@dataclass(frozen=True)
class Mention:
    finding: str
    phrase: str  # the text as written (original case), from the first to the last matched word
    status: FindingStatus
    trigger: str | None
    sentence: str


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int  # exclusive
    kind: str  # "pre" | "post" | "both"
    status: FindingStatus
    text: str


@dataclass(frozen=True)
class _Phrase:
    parts: tuple[tuple[str, ...], ...]  # one part, or the parts of an "A ... B" synonym
    findings: tuple[str, ...]  # one phrase may name several findings; scope decides which
    attribute: bool

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(w for p in self.parts for w in p)


class FindingExtractor:
    """extract(text) → {finding: FindingStatus} for every finding of the label set, in its order."""

    version = EXTRACTOR_VERSION

    def __init__(self, label_set: LabelSet | None = None):
        self.label_set = label_set or ct_rate()
        by_parts: dict[tuple, list[str]] = {}
        for name in self.label_set.names:
            for syn in [name, *self.label_set.synonyms.get(name, ())]:
                parts = tuple(tuple(_tokens(p)) for p in syn.lower().split("..."))
                if all(parts) and name not in by_parts.setdefault(parts, []):
                    by_parts[parts].append(name)
        phrases = []
        for parts, names in by_parts.items():
            words = {w for p in parts for w in p}
            phrases.append(_Phrase(parts, tuple(names), bool(words & _ATTRIBUTE_WORDS and not words & _ABNORMAL_WORDS)))
        # Longest phrase first so "coronary artery calcification" beats "calcification".
        self._phrases = sorted(phrases, key=lambda p: (-len(p.words), -len(p.parts)))
        triggers = [(t, "pre", FindingStatus.NEGATIVE) for t in _PRE_NEG]
        triggers += [(t, "post", FindingStatus.NEGATIVE) for t in _POST_NEG]
        triggers += [(t, "both", FindingStatus.NEGATIVE) for t in _BOTH_NEG]
        triggers += [(t, "pre", FindingStatus.UNCERTAIN) for t in _PRE_UNC]
        triggers += [(t, "post", FindingStatus.UNCERTAIN) for t in _POST_UNC]
        triggers += [(t, "both", FindingStatus.UNCERTAIN) for t in _BOTH_UNC]
        triggers += [(t, "pseudo", FindingStatus.POSITIVE) for t in _PSEUDO]
        self._triggers = sorted(((tuple(_tokens(t)), k, s) for t, k, s in triggers), key=lambda t: -len(t[0]))

    # -- public -------------------------------------------------------------------------------
    def extract(self, text: str) -> dict[str, FindingStatus]:
        found: dict[str, list[FindingStatus]] = {}
        for m in self.mentions(text):
            found.setdefault(m.finding, []).append(m.status)
        out = {}
        for name in self.label_set.names:
            statuses = found.get(name, [])
            for status in (FindingStatus.POSITIVE, FindingStatus.UNCERTAIN, FindingStatus.NEGATIVE):
                if status in statuses:
                    out[name] = status
                    break
            else:
                out[name] = FindingStatus.NOT_MENTIONED
        return out

    def extract_many(self, texts) -> list[dict[str, FindingStatus]]:
        return [self.extract(t) for t in texts]

    def mentions(self, text: str) -> list[Mention]:
        out = []
        for sentence in _SENTENCE.split(str(text or "")):
            out += self._sentence_mentions(sentence)
        return out

    # -- internals ----------------------------------------------------------------------------
    def _sentence_mentions(self, sentence: str) -> list[Mention]:
        spans = _spans(sentence)
        tokens = [t for t, _, _ in spans]
        if not tokens:
            return []
        taken = [False] * len(tokens)
        triggers = self._find_triggers(tokens, taken)
        found = self._find_findings(tokens, taken)
        mentions = []
        for start, end, name, attribute in found:
            best, best_distance = None, None
            for trig in triggers:
                pre, post = trig.kind in ("pre", "both"), trig.kind in ("post", "both")
                if start < trig.start and trig.end < end:
                    distance = 0  # inside an "A ... B" match: "the heart is not enlarged"
                elif pre and trig.end <= start and self._pre_reaches(tokens, trig, start, found):
                    distance = start - trig.end
                elif post and trig.start >= end and self._post_reaches(tokens, trig, end):
                    distance = trig.start - end
                else:
                    continue
                if best_distance is None or distance < best_distance:
                    best, best_distance = trig, distance
            # A negation ahead of the hedge governs it: "no suspicious nodule" is negative.
            if best is not None and best.status == FindingStatus.UNCERTAIN and best.kind == "pre":
                for trig in triggers:
                    if (trig.status == FindingStatus.NEGATIVE and trig.kind == "pre" and trig.end <= best.start
                            and self._pre_reaches(tokens, trig, start, found)):
                        best = trig
                        break
            status = best.status if best else FindingStatus.POSITIVE
            if status != FindingStatus.NEGATIVE and self._normal_cue(name, tokens, start, end):
                status, best = FindingStatus.NEGATIVE, None
            if attribute and status != FindingStatus.NEGATIVE:
                continue
            phrase = sentence[spans[start][1]:spans[end - 1][2]]
            mentions.append(Mention(name, phrase, status, best.text if best else None, sentence.strip()))
        return mentions

    def _find_triggers(self, tokens: list[str], taken: list[bool]) -> list[_Trigger]:
        triggers = []
        where: dict[str, list[int]] = {}
        for i, t in enumerate(tokens):
            where.setdefault(t, []).append(i)
        for words, kind, status in self._triggers:
            n = len(words)
            for i in where.get(words[0], ()):
                if tuple(tokens[i : i + n]) == words and not any(taken[i : i + n]):
                    taken[i : i + n] = [True] * n
                    if kind != "pseudo":
                        triggers.append(_Trigger(i, i + n, kind, status, " ".join(words)))
        return triggers

    def _find_findings(self, tokens: list[str], taken: list[bool]) -> list[tuple[int, int, str, bool]]:
        found = []
        where: dict[str, list[int]] = {}
        for i, t in enumerate(tokens):
            for form in _base_forms(t):
                where.setdefault(form, []).append(i)
        for phrase in self._phrases:
            for i in where.get(phrase.parts[0][0], ()):
                claim, end, coordinated = self._match(tokens, i, phrase.parts)
                # A coordinated match shares its head with the other finding: claim only "pleural".
                if coordinated:
                    claim = [i]
                if end is None or any(taken[j] for j in claim):
                    continue
                names = [n for n in phrase.findings if self._in_scope(n, phrase, tokens, i, end)]
                if names:
                    for j in claim:
                        taken[j] = True
                    found += [(i, end, n, phrase.attribute) for n in names]
        return sorted(found)

    @staticmethod
    def _match(tokens: list[str], i: int, parts) -> tuple[list[int], int | None, bool]:
        """(claimed token indices, end, coordinated) of a match of `parts` at token i; end None if none."""
        first = parts[0]
        n = len(first)
        if i + n <= len(tokens) and all(_word_matches(tokens[i + k], first[k]) for k in range(n)):
            claim, pos = list(range(i, i + n)), i + n
        elif (len(parts) == 1 and n >= 2 and i + n + 2 <= len(tokens) and tokens[i] == first[0]
              and tokens[i + 1] in _CONJUNCTIONS):
            # "pleural and pericardial effusion" mentions pleural effusion.
            rest = tokens[i + 3 : i + 2 + n]
            if len(rest) == n - 1 and all(_word_matches(t, w) for t, w in zip(rest, first[1:])):
                return list(range(i, i + 2 + n)), i + 2 + n, True
            return [], None, False
        else:
            return [], None, False
        for part in parts[1:]:
            m = len(part)
            for gap in range(_GAP + 1):
                j = pos + gap
                if j + m > len(tokens):
                    return [], None, False
                if j > pos and (tokens[j - 1] in _TERMINATORS or tokens[j - 1] in _CONJUNCTIONS):
                    return [], None, False
                if j + m <= len(tokens) and all(_word_matches(tokens[j + k], part[k]) for k in range(m)):
                    claim += list(range(j, j + m))
                    pos = j + m
                    break
            else:
                return [], None, False
        return claim, pos, False

    @staticmethod
    def _in_scope(name: str, phrase: _Phrase, tokens: list[str], start: int, end: int) -> bool:
        scope = _SCOPES.get(name)
        if scope is None:
            return True
        words = set(phrase.words)
        if end < len(tokens) and tokens[end] in scope.not_before:
            return False
        if words & scope.anchors:
            return True

        seg_lo = max([j + 1 for j in range(start) if tokens[j] == ","], default=0)
        seg_hi = min([j for j in range(end, len(tokens)) if tokens[j] == ","], default=len(tokens))
        lo, hi = (seg_lo, seg_hi) if scope.same_segment else (0, len(tokens))

        def owned(j: int) -> bool:
            """'lobe' in 'thyroid lobe' or 'lobe of the thyroid' belongs to the veto organ."""
            after = [t for t in tokens[j + 1 : j + 4] if t != "the"]
            return (j > 0 and tokens[j - 1] in scope.vetoes) or (after[:1] == ["of"] and after[1:2] != []
                                                                 and after[1] in scope.vetoes)

        def nearest(vocab, lo: int = 0, hi: int | None = None) -> int | None:
            hi = len(tokens) if hi is None else hi
            d = [min(abs(j - start), abs(j - (end - 1))) for j in range(lo, hi)
                 if (j < start or j >= end) and tokens[j] in vocab and not _bound_to_coronary(tokens, j, vocab)
                 and not (vocab is not scope.vetoes and owned(j))]
            return min(d) if d else None

        anchors = scope.anchors
        if scope.weak_anchors and nearest(scope.excluded_by) is not None:
            anchors = anchors - scope.weak_anchors
        anchor, veto = nearest(anchors, lo, hi), nearest(scope.vetoes, seg_lo, seg_hi)
        near = nearest(scope.vetoes, max(0, start - _VETO_REACH), start)
        if veto is None or (near is not None and near < veto):
            veto = near
        if anchor is None:
            if nearest(scope.excluded_by) is not None:
                return False
            if scope.required and not (words & scope.strong and veto is None):
                return False
            return veto is None
        return veto is None or anchor <= veto

    @staticmethod
    def _normal_cue(name: str, tokens: list[str], start: int, end: int) -> bool:
        scope = _SCOPES.get(name)
        if scope is None or not scope.normal_cues:
            return False
        lo, hi = start, end
        while lo > 0 and tokens[lo - 1] not in (";", "but", "however"):
            lo -= 1
        while hi < len(tokens) and tokens[hi] not in (";", "but", "however"):
            hi += 1
        clause = " " + " ".join(tokens[lo:hi]) + " "
        return any(f" {cue} " in clause for cue in scope.normal_cues)

    @staticmethod
    def _pre_reaches(tokens, trig: _Trigger, start: int, found) -> bool:
        passed_finding = False
        window = 3 if trig.kind == "both" else None
        if window is not None and start - trig.end > window:
            return False
        for j in range(trig.end, start):
            t = tokens[j]
            if t in _TERMINATORS:
                return False
            if any(s <= j < e for s, e, *_ in found):
                passed_finding = True
            elif passed_finding and t in _ASSERTIONS and t not in _COPULAS - {"has", "have"}:
                return False
        return True

    @staticmethod
    def _post_reaches(tokens, trig: _Trigger, end: int) -> bool:
        if trig.text == "?" and trig.start - end > _QUESTION_REACH:
            return False
        if trig.kind == "both" and trig.start - end > 3:
            return False
        # A plural verb closes a comma list: "infiltration, effusion, pneumothorax were not detected".
        listed = trig.start - end <= 8 and trig.start > 0 and tokens[trig.start - 1] in ("were", "are")
        for j in range(end, trig.start):
            t = tokens[j]
            if t in _TERMINATORS or (t == "," and not listed) or t in _NEGATION_WORDS:
                return False
            if t in _ASSERTIONS and t not in _COPULAS:
                return False
        return True


def _bound_to_coronary(tokens: list[str], j: int, vocab) -> bool:
    """'artery' in 'coronary artery' or 'left anterior descending artery' is no arterial anchor."""
    if tokens[j] not in ("artery", "arteries") or "aorta" not in vocab:
        return False
    before = tokens[max(0, j - 2) : j]
    return any(t in _CORONARY or t in ("descending", "pulmonary", "main") for t in before)


def report_sentences(text: str) -> list[str]:
    """A report's sentences as the extractor splits them (for other rule-based readers of report text)."""
    return [s for s in _SENTENCE.split(str(text or "")) if s.strip()]


def trigger_words() -> set[str]:
    """Every word of the extractor's triggers, terminators and assertion verbs: words that never name a finding."""
    phrases = _PRE_NEG + _POST_NEG + _BOTH_NEG + _PRE_UNC + _POST_UNC + _BOTH_UNC
    return {w for p in phrases for w in _tokens(p)} | _TERMINATORS | _ASSERTIONS
