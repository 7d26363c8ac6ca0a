"""The first curation step: is there text here that the later filters can judge? Empty records, records too long
to be one support exchange, text mangled by bad bytes and text in another language go, each with its reason."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from ballast.curate.base import Drop, Filter
from ballast.policy.english import FUNCTION_WORDS
from ballast.records import Record

if TYPE_CHECKING:  # annotations only
    from ballast.recipe import CurateConfig

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_ASCII_WORD = re.compile(r"[a-z]+")
_NORMALISE = re.compile(r"[\W_]+", re.UNICODE)


@lru_cache(maxsize=1 << 17)  # several filters normalise the same texts of a chunk one after another
def normalised(text: str) -> str:
    """Lower case, punctuation and spacing folded: the text exact and near duplicates are judged on."""
    return _NORMALISE.sub(" ", text.lower()).strip()


class TextCheck(Filter):
    """Empty, over-long, mangled (U+FFFD from bytes that were not UTF-8) or non-English records."""

    name = "normalise"

    def __init__(self, cfg: CurateConfig) -> None:
        self.cfg = cfg

    def drop(self, record: Record) -> Drop | None:
        if not record.instruction.strip():
            return Drop("empty instruction")
        if not record.output.strip():
            return Drop("empty response")
        chars = len(record.instruction) + len(record.input) + len(record.output)
        if chars > self.cfg.max_record_chars:
            return Drop(
                f"record has {chars} characters, over max_record_chars {self.cfg.max_record_chars}", score=float(chars)
            )
        text = f"{record.instruction}\n{record.input}\n{record.output}"
        bad = text.count("\ufffd")
        if bad and (bad >= 3 or "\ufffd" in record.instruction):
            return Drop(
                f"text holds {bad} U+FFFD replacement characters (bytes that did not decode as text)", score=float(bad)
            )
        if self.cfg.english_only:
            return self._language(record.instruction + "\n" + record.output)
        return None

    @staticmethod
    def _language(text: str) -> Drop | None:
        sample = text[:4000]  # enough words to tell the language; a long record costs no more than a short one
        if sample.isascii():
            latin = 1.0
            words = _ASCII_WORD.findall(sample.lower())
            if not words:
                return Drop("no words: the text holds no letters")
        else:
            letters = _WORD.findall(sample)
            if not letters:
                return Drop("no words: the text holds no letters")
            total = sum(map(len, letters))
            latin = sum(len(w) for w in letters if w.isascii()) / total
            if latin < 0.5:
                return Drop(f"not English: {latin:.0%} of letters are Latin-alphabet ASCII", score=round(latin, 3))
            words = [w.lower() for w in letters]
        if len(words) >= 8:
            common = sum(map(FUNCTION_WORDS.__contains__, words)) / len(words)
            if common < 0.1:
                return Drop(f"not English: {common:.0%} of words are common English words", score=round(common, 3))
        return None
