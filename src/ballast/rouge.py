"""ROUGE-L, the one implementation: `rouge_l` for a pair of texts (Self-Instruct's pool, paraphrase checks,
evaluation against the reference reply) and `RougeNoveltyIndex` for Self-Instruct's novelty rule at pool scale,
the same decision as comparing with every accepted text (tests/rouge_reference.py), without doing so.
Both equal rouge-score's ROUGE-L F to the bit (tests/test_rouge.py).

ROUGE-L F between token lists a and b is 2·LCS/(|a|+|b|), and LCS is at most the multiset overlap of a and b.
So a pool text can only push a candidate over the threshold t when they share at least
alpha = floor(t·(|a|+|b|)/2) + 1 tokens, which also bounds the pool text's length. Treating each token
occurrence as an element ("reply" once, "reply" twice, ...) turns the multisets into sets, and the prefix
filter of set-similarity joins applies: order elements rarest first; two texts that share alpha elements share
one among the first |a| - alpha + 1 elements of a and the first |b| - alpha + 1 of b. The index keeps only
those prefixes; a query probes with its own prefix and computes the exact LCS (bit-parallel, Hyyrö 2004) on the
few survivors, with rouge-score's own arithmetic for F, so the decision is the exhaustive one, not an estimate.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable

import numpy as np

# rouge-score's tokenizer without stemming: lower-case, every run of other characters is a separator.
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# Slack for the bound only: a pair whose float F is just above t has 2·LCS/(|a|+|b|) within rounding of t.
_EPS = 1e-9
_MAX_VOCAB = 0x10FFFF - 0x800  # token ids are code points (around the surrogates)
_OCC = 1 << 20  # element key = token id * _OCC + occurrence; no text here has a million copies of one token


def rouge_tokens(text: str) -> list[str]:
    """Exactly `rouge_score.tokenize.tokenize(text, None)` (no stemming), which the reference uses."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_f(lcs: int, n_target: int, n_prediction: int) -> float:
    """rouge-score's own arithmetic (precision, recall, then their harmonic mean), so floats agree to the bit."""
    if not lcs:
        return 0.0
    precision, recall = lcs / n_prediction, lcs / n_target
    return 2 * precision * recall / (precision + recall)


def _stemmed_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer with its Porter stemmer (as `RougeScorer(["rougeL"], use_stemmer=True)`)."""
    from rouge_score.tokenizers import DefaultTokenizer

    global _STEMMING
    if _STEMMING is None:
        _STEMMING = DefaultTokenizer(use_stemmer=True)
    return _STEMMING.tokenize(text)


_STEMMING = None


def rouge_l(target: str, prediction: str, *, stem: bool = False) -> float:
    """ROUGE-L F of `prediction` against `target`: rouge-score's `RougeScorer(["rougeL"], use_stemmer=stem)
    .score(target, prediction)["rougeL"].fmeasure`, computed with the bit-parallel LCS."""
    tokens = _stemmed_tokens if stem else rouge_tokens
    a, b = tokens(target), tokens(prediction)
    if not a or not b:
        return 0.0
    ids: dict[str, int] = {}
    a_ids = [ids.setdefault(t, len(ids)) for t in a]
    b_ids = [ids.setdefault(t, len(ids)) for t in b]
    return rouge_f(lcs_length(a_ids, b_ids), len(a), len(b))


def _as_string(ids: list[int]) -> str:
    """Token ids as code points, around the surrogates (which a str may not hold alone)."""
    return "".join([chr(i) if i < 0xD800 else chr(i + 0x800) for i in ids])


def lcs_length(a: list[int], b: Iterable[int]) -> int:
    """Length of the longest common subsequence, bit-parallel over a (Hyyrö 2004)."""
    masks: dict[int, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_with_masks(masks, len(a), b)


def _lcs_with_masks(masks: dict[int, int], m: int, b: Iterable[int]) -> int:
    full = (1 << m) - 1
    v = full
    get = masks.get
    for tok in b:
        match = get(tok)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


class RougeNoveltyIndex:
    """Accepted texts, indexed so that `most_similar` finds every one whose ROUGE-L F with a new text exceeds
    the threshold. Same answers as RougeNovelty (`is_novel` agrees on every text; `most_similar` returns the
    same id and score whenever that score exceeds the threshold, and a lower bound otherwise).

    Call `fit(texts)` before adding anything to order tokens rarest first from the texts to come; without it the
    order is first-seen, which is just as exact and slower.

    `shared` strengthens the prefix filter: two texts with an overlap of alpha share at least min(shared, alpha)
    elements among their first |a| - alpha + shared and |b| - alpha + shared (the k-th common element, in the
    global order, has at most |a| - alpha + k - 1 elements of a before it). Requiring `shared` matches instead
    of one discards the many texts that share a single name or product with the query. Postings are kept per
    element and text length, so a query reads only the lengths, and the positions, where a match can count."""

    def __init__(self, threshold: float = 0.7, shared: int = 4) -> None:
        self.threshold = threshold
        self.shared = shared
        self._t = threshold - _EPS
        self._vocab: dict[str, int] = {}
        self._freq: Counter[int] = Counter()
        self._rank: dict[int, int] = {}  # element -> position in the global order (fixed at first use)
        # element -> pool position << 24 | text length << 12 | the element's position in that text's order
        # (length and position capped at 4095: a capped value only loosens the bounds). `_core` holds the
        # positions a partner of the same length or longer needs, `_tail` the rest of the extended prefix,
        # which only a shorter partner needs, and only with the rarer part of its own prefix.
        self._core: dict[int, array] = {}
        self._tail: dict[int, array] = {}
        self._ids: list[str] = []
        # Each accepted text as a string with one character per token (its id as a code point), for
        # rapidfuzz's bit-parallel LCS in C++; the lengths for the bounds.
        self._texts: list[str] = []
        self._lengths = array("q")
        self._bounds: dict[int, tuple[int, int, int, int, np.ndarray, np.ndarray]] = {}
        self.pairs_verified = 0  # exact LCS computations, for benchmarks

    def __len__(self) -> int:
        return len(self._ids)

    def fit(self, texts: Iterable[str]) -> RougeNoveltyIndex:
        """Count how many texts hold each element, so that prefixes hold the rarest ones."""
        if self._rank:
            raise RuntimeError("fit() must come before the index is used: the token order is fixed at first use")
        for text in texts:
            self._freq.update(self._elements(self._ids_of(rouge_tokens(text))))
        return self

    def _ids_of(self, tokens: list[str]) -> list[int]:
        vocab = self._vocab
        out = []
        for tok in tokens:
            i = vocab.get(tok)
            if i is None:
                if len(vocab) >= _MAX_VOCAB:
                    raise ValueError(f"more than {_MAX_VOCAB} distinct tokens: too many for one novelty index")
                i = vocab[tok] = len(vocab)
            out.append(i)
        return out

    @staticmethod
    def _elements(ids: list[int]) -> list[int]:
        seen: dict[int, int] = {}
        out = []
        for i in ids:
            occ = seen.get(i, 0)
            seen[i] = occ + 1
            out.append(i * _OCC + occ)
        return out

    def _ordered(self, elements: list[int]) -> list[int]:
        rank = self._rank
        for e in elements:
            if e not in rank:
                # Rarer elements first; ties (and elements never counted) by first use. Fixed from now on.
                rank[e] = self._freq.get(e, 0) * (1 << 32) + len(rank)
        return sorted(elements, key=rank.__getitem__)

    def _alpha(self, n: int, m: int) -> int:
        """Least token overlap for F > t between texts of n and m tokens."""
        return math.floor(self._t * (n + m) / 2) + 1

    def _bound(self, n: int) -> tuple[int, int, int, int, np.ndarray, np.ndarray]:
        """For a text of n tokens: its extended prefix length, its core (the prefix that partners of n tokens
        or more need), the shortest and longest partner length, and per partner length m (0..4095) the prefix
        lengths that count for the pair, on this side and on the partner's (0: no such partner can exceed the
        threshold)."""
        b = self._bounds.get(n)
        if b is None:
            lo = next((m for m in range(1, n + 1) if self._alpha(n, m) <= m), None)
            mine = np.zeros(4096, dtype=np.int64)
            theirs = np.zeros(4096, dtype=np.int64)
            if lo is None or self._alpha(n, lo) > n:
                b = (0, 0, 1, 0, mine, theirs)  # no partner can exceed the threshold
            else:
                hi = n
                while self._alpha(n, hi + 1) <= n:
                    hi += 1
                for m in range(lo, min(hi, 4095) + 1):
                    a = self._alpha(n, m)
                    mine[m] = min(n, n - a + min(self.shared, a))
                    theirs[m] = m - a + min(self.shared, a)
                if hi >= 4095:  # capped lengths: the loosest bounds of all the lengths they stand for
                    mine[4095], theirs[4095] = n, 1 << 40
                # (mine falls as m grows, so the core, mine at m = n, bounds every longer partner's)
                b = (int(mine.max()), int(mine[min(n, 4095)]), lo, hi, mine, theirs)
            self._bounds[n] = b
        return b

    def add(self, record_id: str, text: str) -> None:
        self._add(record_id, self._ids_of(rouge_tokens(text)))

    def _add(self, record_id: str, ids: list[int]) -> None:
        pos = len(self._ids)
        m = len(ids)
        self._ids.append(record_id)
        self._texts.append(_as_string(ids))
        self._lengths.append(m)
        if not ids:
            return  # F is 0 against an empty text: it can never be the similar one
        prefix, core = self._bound(m)[:2]
        head = pos << 24 | min(m, 4095) << 12
        for j, e in enumerate(self._ordered(self._elements(ids))[:prefix]):
            postings = self._core if j < core else self._tail
            entry = head | min(j, 4095)
            lst = postings.get(e)
            if lst is None:
                postings[e] = array("q", (entry,))
            else:
                lst.append(entry)

    def _candidates(self, ids: list[int]) -> np.ndarray:
        """Pool positions, ascending, that share enough elements in the right places to possibly exceed the
        threshold."""
        n = len(ids)
        prefix, core, lo, _, mine, theirs = self._bound(n)
        found = []
        entries = None
        for i, e in enumerate(self._ordered(self._elements(ids))[:prefix]):
            # A match at i >= core counts only with a shorter partner, for which it lies in the partner's core.
            for postings in (self._core, self._tail) if i < core else (self._core,):
                lst = postings.get(e)
                if lst:
                    entries = np.frombuffer(lst, dtype=np.int64)
                    m = (entries >> 12) & 0xFFF
                    # a match counts if it lies in both prefixes for this pair of lengths
                    keep = entries[(mine[m] > i) & (theirs[m] > (entries & 0xFFF))]
                    if len(keep):
                        found.append(keep >> 24)
        entries = None  # release the last view of a posting list before anything appends to it
        if not found:
            return np.empty(0, dtype=np.int64)
        pos = np.concatenate(found)
        counts = np.bincount(pos)
        # each pair needs min(shared, alpha) matches; alpha is least for the shortest partner
        return np.nonzero(counts >= min(self.shared, self._alpha(n, lo)))[0]

    def _scores(self, ids: list[int], candidates: np.ndarray) -> np.ndarray:
        """Exact ROUGE-L F of the query against each candidate: LCS lengths from rapidfuzz (bit-parallel,
        C++), then rouge-score's arithmetic elementwise, the same float operations in the same order."""
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq

        n = len(ids)
        self.pairs_verified += len(candidates)
        texts = self._texts
        lcs = process.cdist(
            [_as_string(ids)],
            [texts[c] for c in candidates.tolist()],
            scorer=LCSseq.similarity,
            dtype=np.int64,
            workers=1,
        )[0]
        lengths = np.frombuffer(self._lengths, dtype=np.int64)[candidates]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = lcs / n, lcs / lengths
            return np.where(lcs > 0, 2 * precision * recall / (precision + recall), 0.0)

    def _search(self, ids: list[int]) -> tuple[int | None, float]:
        n = len(ids)
        if not n or not self._bound(n)[0]:
            return None, 0.0
        candidates = self._candidates(ids)
        if not len(candidates):
            return None, 0.0
        scores = self._scores(ids, candidates)
        best = int(np.argmax(scores))  # the first of equal scores: the earliest text, as in the reference
        if scores[best] <= 0.0:
            return None, 0.0
        return int(candidates[best]), float(scores[best])

    def most_similar(self, text: str) -> tuple[str | None, float]:
        pos, score = self._search(self._ids_of(rouge_tokens(text)))
        return (self._ids[pos] if pos is not None else None), score

    def is_novel(self, text: str) -> tuple[bool, str | None, float]:
        similar_id, score = self.most_similar(text)
        return score <= self.threshold, similar_id, score

    def add_if_novel(self, record_id: str, text: str) -> tuple[bool, str | None, float]:
        """Self-Instruct's loop in one call: decide, and accept the text into the pool when it is novel."""
        ids = self._ids_of(rouge_tokens(text))
        pos, score = self._search(ids)
        novel = score <= self.threshold
        if novel:
            self._add(record_id, ids)
        return novel, (self._ids[pos] if pos is not None else None), score
