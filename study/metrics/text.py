"""Named text conventions for the n-gram metrics (BLEU, METEOR, ROUGE-L, CIDEr-D): the one place
that says how a report becomes the token string the scorers see. The convention alone moves BLEU-4
by about 0.05, so its name travels with every number (metric card, `rad3d compare` refuses a mix).

- `r2gen` (default): R2Gen's `clean_report_mimic_cxr` (cuhksz-nlp/R2Gen, modules/tokenizers.py),
  which R2GenGPT and CT2Rep reuse for CT-RATE, then whitespace tokens joined by one space as R2Gen's
  own tokenize → decode round trip does before scoring (so an empty text, which the cleaner turns
  into " .", is scored as "."). No PTB tokenizer.
- `coco`: pycocoevalcap's PTBTokenizer (Stanford PTB, lower-cased, its punctuation list dropped).
- `raw`: the text as written, whitespace runs collapsed to one space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import ConfigError

DEFAULT_CONVENTION = "r2gen"


@dataclass(frozen=True)
class TextConvention:
    name: str
    description: str
    tokenisation: str
    prepare: Callable[[list[str]], list[str]]

    def card(self) -> dict:
        return {"name": self.name, "description": self.description, "tokenisation": self.tokenisation}


# --- R2Gen's clean_report_mimic_cxr, re-implemented from its rules -----------------------------
# Characters its sentence cleaner deletes: first " / \ ' by str.replace, then the regex class
# [.,?;*!%^&_+():-\[\]{}], in which ":-\[" is a range (":" to "[") that also covers ; < = > ? @
# and A-Z (A-Z never survive: the text is lower-cased first). Not deleted: - # $ ~ ` | digits and
# every non-ASCII character.
_QUOTES = str.maketrans("", "", "\"/\\'")
_DELETED = str.maketrans("", "", ".,?;*!%^&_+()[]{}:<=>@" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# (text, replacement, passes): R2Gen chains str.replace a fixed number of times, so e.g. 2**8 dots
# shrink to one and longer runs keep the rest.
_SQUEEZES = (("__", "_", 7), ("  ", " ", 6), ("..", ".", 8))


def clean_report_mimic_cxr(text: str) -> str:
    """R2Gen's cleaning: 'No effusion.. 1. Nodule!' → 'no effusion . nodule .'; '' → ' .'.

    Steps, in R2Gen's order: newline → space (a CR stays); runs of '_', '  ' and '..' squeezed by
    repeated pairwise replacement; every '1. ' deleted; '. k. ' and then ' k. ' → '. ' for k = 2..5
    (numbered-list markers); strip, lower-case, split at '. '; per sentence: delete the quote
    characters, strip, lower-case, delete the punctuation class; join by ' . ' and append ' .'.
    Sentences that end up empty are kept (R2Gen's filter compares a string with a list)."""
    text = str(text).replace("\n", " ")
    for pair, single, passes in _SQUEEZES:
        for _ in range(passes):
            text = text.replace(pair, single)
    text = text.replace("1. ", "")
    for k in range(2, 6):
        text = text.replace(f". {k}. ", ". ")
    for k in range(2, 6):
        text = text.replace(f" {k}. ", ". ")
    sentences = text.strip().lower().split(". ")
    cleaned = [s.translate(_QUOTES).strip().lower().translate(_DELETED) for s in sentences]
    return " . ".join(cleaned) + " ."


def _r2gen(texts: list[str]) -> list[str]:
    return [" ".join(clean_report_mimic_cxr(t).split()) for t in texts]


def _raw(texts: list[str]) -> list[str]:
    return [" ".join(str(t).split()) for t in texts]


def _coco(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (one Java call for all texts). Whitespace is collapsed first:
    the tokenizer reads one text per line, and a CR inside a text would split it in two."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not texts:
        return []
    tokenized = PTBTokenizer().tokenize({i: [{"caption": " ".join(str(t).split())}] for i, t in enumerate(texts)})
    return [tokenized[i][0] for i in range(len(texts))]


CONVENTIONS: dict[str, TextConvention] = {c.name: c for c in (
    TextConvention("r2gen", "R2Gen's clean_report_mimic_cxr on both texts (as R2Gen, R2GenGPT and CT2Rep score "
                   "CT-RATE): lower-cased, numbered-list markers and repeated punctuation removed, sentences "
                   "split at '. ', punctuation deleted, joined by ' . ' with a final ' .'",
                   "whitespace tokens of the cleaned text (no PTB tokenizer)", _r2gen),
    TextConvention("coco", "pycocoevalcap's PTBTokenizer on both texts (COCO caption evaluation)",
                   "Stanford PTBTokenizer 3.4.1, lower-cased, pycocoevalcap's punctuation list dropped", _coco),
    TextConvention("raw", "the texts as written (case and punctuation kept)", "whitespace tokens", _raw),
)}


def text_convention(name: str) -> TextConvention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ConfigError(f"unknown text convention {name!r}; choose one of {', '.join(CONVENTIONS)}") from None
