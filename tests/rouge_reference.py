"""Self-Instruct's novelty rule, exhaustively: the reference the fast index (ballast.rouge) is tested against."""

from __future__ import annotations

from rouge_score import rouge_scorer


class RougeNovelty:
    """Exhaustive reference implementation (rouge-score, no stemming, as Self-Instruct)."""

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._pool: list[tuple[str, str]] = []  # (record id, text)

    def add(self, record_id: str, text: str) -> None:
        self._pool.append((record_id, text))

    def most_similar(self, text: str) -> tuple[str | None, float]:
        best_id, best = None, 0.0
        for pool_id, pool_text in self._pool:
            score = self._scorer.score(pool_text, text)["rougeL"].fmeasure
            if score > best:
                best_id, best = pool_id, score
        return best_id, best

    def is_novel(self, text: str) -> tuple[bool, str | None, float]:
        similar_id, score = self.most_similar(text)
        return score <= self.threshold, similar_id, score
