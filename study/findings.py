"""Rule-based extraction of the label set's findings from report text: for each finding one of
positive / negative / uncertain / not mentioned.

Sentence by sentence: finding phrases come from the label set's synonyms (longest match first,
plural forms and "pleural and pericardial effusion"-style coordination accepted); NegEx-style
triggers with a direction decide each mention's status:
  - pre-triggers ("no", "without", "free of", "possible", "suspicious for") reach forward until a
    scope terminator ("but", "however", ";") or, once a finding was passed, the verb that
    closes its clause ("No effusion was detected, ...");
  - post-triggers ("was not detected", "absent", "is normal", "cannot be excluded") reach back
    over the findings of their own clause, stopping at a comma, a terminator or an assertion verb
    ("Atelectasis is seen and effusion was not detected" negates only the effusion).
The nearest trigger in scope wins. A report's status per finding: positive if any mention is
positive, else uncertain if any is uncertain, else negative if any is negative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from engine.labels import LabelSet, ct_rate


class FindingStatus(str, Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not mentioned"


_PRE_NEG = ["no", "without", "absence of", "free of", "negative for", "neither", "nor", "not",
            "no evidence of", "no sign of", "no signs of", "no findings of", "rather than",
            "rule out", "exclusion of", "never"]
_POST_NEG = ["not observed", "not detected", "not seen", "not identified", "not noted", "not present",
             "not visualized", "not visualised", "not evident", "not found", "not demonstrated", "not apparent",
             "excluded", "resolved", "within normal limits", "within normal range", "within normal", "is normal",
             "are normal", "was normal", "were normal", "is unremarkable", "are unremarkable"]
# Either side, close by: "normal heart size" and "heart size normal", "absent effusion", "effusion absent".
_BOTH_NEG = ["normal", "absent", "unremarkable", "ruled out"]
_PRE_UNC = ["possible", "possibly", "probable", "probably", "suspicious for", "suspicion of", "suspected",
            "questionable", "equivocal", "may represent", "might represent", "could represent", "may be",
            "might be", "could be", "likely", "cannot exclude", "can not exclude", "could not exclude",
            "cannot rule out", "can not rule out", "suggestive of", "concerning for", "differential diagnosis",
            "consider", "versus", "vs", "borderline", "doubtful", "presumed", "query"]
_POST_UNC = ["cannot be excluded", "can not be excluded", "could not be excluded", "not excluded",
             "cannot be ruled out", "can not be ruled out", "could not be ruled out", "not ruled out",
             "is suspected", "are suspected", "was suspected", "were suspected", "is possible", "is probable",
             "is likely", "are likely", "is questionable", "is considered", "are considered", "may be present",
             "is not excluded", "is equivocal"]
# Phrases that look like negations but negate something else ("no change in the nodule").
_PSEUDO = ["no change", "no significant change", "no interval change", "no increase", "no decrease",
           "not only", "no significant interval change", "without change", "without significant change",
           "no longer"]
_TERMINATORS = {"but", "however", "although", "though", "except", "whereas", "while", "which", "apart", "aside",
                "nevertheless", "yet", ";", ":", "("}
_ASSERTIONS = {"seen", "observed", "detected", "noted", "identified", "present", "visualized", "visualised",
               "demonstrated", "shows", "show", "showed", "reveals", "revealed", "appears", "found", "evident",
               "measuring", "measures", "containing", "contains", "is", "are", "was", "were", "has", "have"}
_NEGATION_WORDS = {"no", "not", "without", "nor", "neither"}
_CONJUNCTIONS = {"and", "or", ","}

_TOKEN = re.compile(r"[a-z0-9]+|[,;:(]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|(?<=[a-z])\.(?=[A-Z])")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("n't", " not"))


def _word_matches(token: str, word: str) -> bool:
    """'nodules' ~ 'nodule', 'opacities' ~ 'opacity', 'sequelae' ~ 'sequela'."""
    if token == word:
        return True
    if token in (word + "s", word + "es", word + "e"):
        return True
    return word.endswith("y") and token == word[:-1] + "ies"


@dataclass(frozen=True)
class Mention:
    finding: str
    phrase: str
    status: FindingStatus
    trigger: str | None
    sentence: str


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int  # exclusive
    kind: str  # "pre" | "post"
    status: FindingStatus
    text: str


class FindingExtractor:
    """extract(text) → {finding: FindingStatus} for every finding of the label set, in its order."""

    def __init__(self, label_set: LabelSet | None = None):
        self.label_set = label_set or ct_rate()
        phrases = []
        for name in self.label_set.names:
            for syn in {name.lower(), *(s.lower() for s in self.label_set.synonyms.get(name, ()))}:
                words = tuple(_tokens(syn))
                if words:
                    phrases.append((words, name))
        # Longest phrase first so "coronary artery calcification" beats "calcification"-like overlaps.
        self._phrases = sorted(phrases, key=lambda p: -len(p[0]))
        triggers = [(t, "pre", FindingStatus.NEGATIVE) for t in _PRE_NEG]
        triggers += [(t, "post", FindingStatus.NEGATIVE) for t in _POST_NEG]
        triggers += [(t, "both", FindingStatus.NEGATIVE) for t in _BOTH_NEG]
        triggers += [(t, "pre", FindingStatus.UNCERTAIN) for t in _PRE_UNC]
        triggers += [(t, "post", FindingStatus.UNCERTAIN) for t in _POST_UNC]
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
        tokens = _tokens(sentence)
        if not tokens:
            return []
        taken = [False] * len(tokens)
        triggers = self._find_triggers(tokens, taken)
        found = self._find_findings(tokens, taken)
        mentions = []
        for start, end, name in found:
            best, best_distance = None, None
            for trig in triggers:
                pre, post = trig.kind in ("pre", "both"), trig.kind in ("post", "both")
                if pre and trig.end <= start and self._pre_reaches(tokens, trig, start, found):
                    distance = start - trig.end
                elif post and trig.start >= end and self._post_reaches(tokens, trig, end):
                    distance = trig.start - end
                else:
                    continue
                if best_distance is None or distance < best_distance:
                    best, best_distance = trig, distance
            status = best.status if best else FindingStatus.POSITIVE
            mentions.append(Mention(name, " ".join(tokens[start:end]), status, best.text if best else None,
                                    sentence.strip()))
        return mentions

    def _find_triggers(self, tokens: list[str], taken: list[bool]) -> list[_Trigger]:
        triggers = []
        for words, kind, status in self._triggers:
            n = len(words)
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i : i + n]) == words and not any(taken[i : i + n]):
                    taken[i : i + n] = [True] * n
                    if kind != "pseudo":
                        triggers.append(_Trigger(i, i + n, kind, status, " ".join(words)))
        return triggers

    def _find_findings(self, tokens: list[str], taken: list[bool]) -> list[tuple[int, int, str]]:
        found = []
        for words, name in self._phrases:
            n = len(words)
            for i in range(len(tokens)):
                end, coordinated = self._match_at(tokens, i, words)
                # A coordinated match shares its head with the other finding: claim only "pleural and".
                claim = i + 2 if coordinated else end
                if end is not None and not any(taken[i:claim]):
                    taken[i:claim] = [True] * (claim - i)
                    found.append((i, end, name))
        return sorted(found)

    @staticmethod
    def _match_at(tokens: list[str], i: int, words: tuple[str, ...]) -> tuple[int | None, bool]:
        """End of a match of `words` at token i, also across one coordinated modifier
        ("pleural and pericardial effusion" mentions pleural effusion)."""
        n = len(words)
        if i + n <= len(tokens) and all(_word_matches(tokens[i + k], words[k]) for k in range(n)):
            return i + n, False
        if n >= 2 and i + n + 2 <= len(tokens) and tokens[i] == words[0] and tokens[i + 1] in _CONJUNCTIONS:
            rest = tokens[i + 3 : i + 2 + n]
            if len(rest) == n - 1 and all(_word_matches(t, w) for t, w in zip(rest, words[1:])):
                return i + 2 + n, True
        return None, False

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
            if any(s <= j < e for s, e, _ in found):
                passed_finding = True
            elif passed_finding and t in _ASSERTIONS and t not in {"is", "are", "was", "were"}:
                return False
        return True

    @staticmethod
    def _post_reaches(tokens, trig: _Trigger, end: int) -> bool:
        for j in range(end, trig.start):
            t = tokens[j]
            if t in _TERMINATORS or t == "," or t in _NEGATION_WORDS:
                return False
            if t in _ASSERTIONS and t not in {"is", "are", "was", "were", "has", "have"}:
                return False
        return True
