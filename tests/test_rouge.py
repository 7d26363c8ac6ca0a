"""The one ROUGE-L (ballast.rouge) equals rouge-score's to the bit, with and without stemming."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rouge_score import rouge_scorer

from ballast.rouge import rouge_l

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"


def _texts() -> list[str]:
    rows = [json.loads(line) for line in (EXAMPLE / "devset.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [t for r in rows[:60] for t in (r["instruction"], r["output"])]
    rng = random.Random(0)
    words = " ".join(texts).split()
    texts += [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(60)]
    return texts + ["", "!!!", "Running runs ran; the runner's run.", "ÄÖÜ café naïve"]


def test_rouge_l_equals_rouge_score_exactly():
    texts = _texts()
    rng = random.Random(1)
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(1500)] + [(t, t) for t in texts[:20]]
    for stem in (False, True):
        reference = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
        for target, prediction in pairs:
            expected = reference.score(target, prediction)["rougeL"].fmeasure
            assert rouge_l(target, prediction, stem=stem) == expected, (stem, target, prediction)
