"""The one text convention every n-gram metric uses, so numbers are comparable with R2Gen,
R2GenGPT and CT2Rep (the convention alone moves BLEU-4 by about 0.05)."""

from __future__ import annotations

import re
import string

TEXT_CONVENTION = (
    "R2Gen-style: lower-cased, split into sentences at '.', '!' or '?' followed by a space (and at line "
    "breaks), punctuation other than intra-word hyphens deleted, sentences joined by ' . ' with a final ' .'; "
    "tokens are the whitespace-separated words"
)

_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)|\n+")
# Deleted (not replaced by a space), as R2Gen does: "3.5" → "35", "lungs," → "lungs".
_PUNCT = re.compile("[" + re.escape(string.punctuation.replace("-", "")) + "]")
_LOOSE_HYPHEN = re.compile(r"(?<![a-z0-9])-+|-+(?![a-z0-9])")


def normalize_report(text: str) -> str:
    """'No pleural effusion. Heart size is normal!' → 'no pleural effusion . heart size is normal .'
    An empty text stays empty."""
    sentences = []
    for sentence in _SENTENCE_END.split(str(text).lower()):
        sentence = _LOOSE_HYPHEN.sub(" ", _PUNCT.sub("", sentence))
        sentence = " ".join(sentence.split())
        if sentence:
            sentences.append(sentence)
    return " . ".join(sentences) + " ." if sentences else ""
