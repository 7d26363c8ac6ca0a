"""A learned policy-conformance classifier, for what the rule checks cannot see.

Trained on human seeds (conformant) and contrastive negatives (each breaks one named rule): a calibrated
logistic-regression head gives the probability that a record violates the policy, and a one-vs-rest head over
rule ids, fitted on the negatives, names the rules it most likely breaks.

Features per record: the MiniLM embedding of the instruction and input; the mean and the maximum of the
embeddings of the reply's sentences (one embedding of a whole reply is truncated at 256 tokens and averages
a one-sentence edit away; the maximum keeps a single off-policy sentence visible); the embedding of the reply's
opening sentence after any salutation (a reply must acknowledge the problem before it instructs); the highest
score any of its sentences gets from a sentence head (human seed sentences against the sentences an edit put in,
scored out of fold while fitting, so the record head does not learn to trust a memorised score); and,
optionally, which rules the policy checker's findings name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ballast.backends.base import Embedder
from ballast.errors import InputError
from ballast.policy.checks import PolicyChecker, split_sentences
from ballast.policy.schema import Policy
from ballast.recipe import ClassifierConfig
from ballast.records import Record

_FOLDS = 5
_TOP_RULES = 3
# A greeting line or a heading ("Draft reply:") says nothing about what the reply does first.
_NOT_AN_OPENING = re.compile(r"^(?:(?:dear|hi|hello)\b[^.!?]{0,60}|[^.!?]{0,40}:)$", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    p_violation: float
    rules: list[tuple[str, float]]  # (rule id, probability it is the rule broken), most likely first

    @property
    def top_rule(self) -> str | None:
        return self.rules[0][0] if self.rules else None


def training_hash(conformant: Sequence[Record], violations: Sequence[Record]) -> str:
    """What the classifier learned from: record ids, their labels and rule ids, in a stable order."""
    rows = sorted([(r.id, 0, []) for r in conformant] + [(r.id, 1, sorted(r.rules)) for r in violations])
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


class _Featurizer:
    """Record -> feature vector; sentences are embedded once even when many records share them."""

    def __init__(self, policy: Policy, embedder: Embedder, rule_features: bool) -> None:
        self.embedder = embedder
        self.rule_ids = policy.rule_ids
        self.checker = PolicyChecker(policy) if rule_features else None

    def __call__(self, records: Sequence[Record]) -> tuple[np.ndarray, list[list[str]], list[np.ndarray]]:
        """Record features, each reply's sentences, and their embeddings."""
        contexts = [f"{r.instruction}\n{r.input}".strip() for r in records]
        replies = [split_sentences(r.output) or [""] for r in records]
        texts = sorted(set(contexts) | {s for sentences in replies for s in sentences})
        vectors = self.embedder.embed(texts)
        row = {t: i for i, t in enumerate(texts)}
        openings = [next((s for s in sentences if not _NOT_AN_OPENING.match(s)), sentences[0]) for sentences in replies]
        blocks = [
            vectors[[row[c] for c in contexts]],
            np.stack([vectors[[row[s] for s in sentences]].mean(axis=0) for sentences in replies]),
            np.stack([vectors[[row[s] for s in sentences]].max(axis=0) for sentences in replies]),
            vectors[[row[s] for s in openings]],
        ]
        if self.checker is not None:
            blocks.append(self._findings(records))
        return (
            np.hstack(blocks).astype(np.float32),
            replies,
            [vectors[[row[s] for s in sentences]] for sentences in replies],
        )

    def _findings(self, records: Sequence[Record]) -> np.ndarray:
        index = {rule_id: i for i, rule_id in enumerate(self.rule_ids)}
        out = np.zeros((len(records), len(self.rule_ids)), dtype=np.float32)
        for n, r in enumerate(records):
            for f in self.checker.check(r.instruction, r.input, r.output, r.audience):
                out[n, index[f.rule_id]] = 1.0
        return out


def _max_score(head, sentence_vectors: list[np.ndarray]) -> np.ndarray:  # noqa: ANN001
    """Per record, the sentence head's highest violation probability over its sentences."""
    scores = head.predict_proba(np.vstack(sentence_vectors))[:, 1]
    bounds = np.cumsum([0, *(len(v) for v in sentence_vectors)])
    return np.array([scores[a:b].max() for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dtype=np.float32)


class ConformanceClassifier:
    def __init__(
        self, policy: Policy, embedder: Embedder | None = None, *, rule_features: bool = True, c: float = 1.0
    ) -> None:
        if embedder is None:
            from ballast.backends.minilm import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self.policy, self.embedder, self.rule_features, self.c = policy, embedder, rule_features, c
        self._features = _Featurizer(policy, embedder, rule_features)
        self._violation = self._rules = self._sentence = None
        self.rule_labels: list[str] = []
        self.data_sha256: str | None = None
        self.trained_on = (0, 0)  # (conformant, violating) records

    def fit(self, conformant: Sequence[Record], violations: Sequence[Record]) -> ConformanceClassifier:
        """`conformant`: human training seeds; `violations`: labelled negatives built from them, each with the
        rule ids it breaks in `rules`. A negative counts in the same cross-validation fold as its parent, so
        calibration is measured on seeds the model has not seen edited."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import GroupKFold
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        unlabelled = [r.id for r in violations if not r.rules]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} violations name no rule id, e.g. record {unlabelled[0]}")
        if len(conformant) < _FOLDS or len(violations) < _FOLDS:
            raise ValueError(
                f"need at least {_FOLDS} conformant and {_FOLDS} violating records, "
                f"got {len(conformant)} and {len(violations)}"
            )
        records = [*conformant, *violations]
        x, replies, sentence_vectors = self._features(records)
        y = np.array([0] * len(conformant) + [1] * len(violations))
        groups = [r.parent_ids[0] if r.parent_ids else r.id for r in records]
        folds = list(GroupKFold(n_splits=_FOLDS).split(x, y, groups))

        # Sentence labels: every sentence of a seed is conformant; a negative's sentences that its parent does not
        # have are what the edit put in. Sentences a negative shares with its parent are left out of the head.
        own = {r.id: set(s) for r, s in zip(records, replies, strict=True)}
        labelled = []
        for r, label, sentences in zip(records, y, replies, strict=True):
            parent = own.get(r.parent_ids[0], set()) if label and r.parent_ids else set()
            labelled.append(np.array([-1 if s in parent else int(label) for s in sentences]))
        oof = np.zeros(len(records), dtype=np.float32)
        for train_idx, test_idx in folds:
            head = self._fit_sentences([sentence_vectors[i] for i in train_idx], [labelled[i] for i in train_idx])
            oof[test_idx] = _max_score(head, [sentence_vectors[i] for i in test_idx])
        self._sentence = self._fit_sentences(sentence_vectors, labelled)
        x = np.hstack([x, oof[:, None]])
        self._violation = CalibratedClassifierCV(self._linear(), method="sigmoid", cv=folds).fit(x, y)

        binarizer = MultiLabelBinarizer()
        labels = binarizer.fit_transform([r.rules for r in violations])
        if labels.shape[1] < 2:
            raise ValueError(f"the violations name only {list(binarizer.classes_)}; the rule head needs two rules")
        self.rule_labels = list(binarizer.classes_)
        self._rules = OneVsRestClassifier(self._linear()).fit(x[len(conformant) :], labels)
        self.data_sha256 = training_hash(conformant, violations)
        self.trained_on = (len(conformant), len(violations))
        return self

    def _fit_sentences(self, vectors: list[np.ndarray], labels: list[np.ndarray]):  # noqa: ANN202
        xs, ys = np.vstack(vectors), np.concatenate(labels)
        keep = ys >= 0
        return self._linear().fit(xs[keep], ys[keep])

    def _linear(self):  # noqa: ANN202
        from sklearn.linear_model import LogisticRegression

        # Balanced: negatives outnumber seeds several times over, and some rules have a handful of negatives.
        return LogisticRegression(C=self.c, class_weight="balanced", max_iter=5000)

    def predict(self, records: Sequence[Record]) -> list[Verdict]:
        if self._violation is None:
            raise RuntimeError("the classifier is not fitted; call fit() or load()")
        if not records:
            return []
        x, _, sentence_vectors = self._features(records)
        x = np.hstack([x, _max_score(self._sentence, sentence_vectors)[:, None]])
        p_violation = self._violation.predict_proba(x)[:, 1]
        p_rules = self._rules.predict_proba(x)
        # One-vs-rest scores are independent per rule; normalised they share out the violation probability.
        p_rules = p_rules / np.clip(p_rules.sum(axis=1, keepdims=True), 1e-12, None) * p_violation[:, None]
        verdicts = []
        for p, row in zip(p_violation, p_rules, strict=True):
            top = np.argsort(-row, kind="stable")[:_TOP_RULES]
            verdicts.append(Verdict(float(p), [(self.rule_labels[i], float(row[i])) for i in top]))
        return verdicts

    # --- persistence ---

    def _meta(self) -> dict:
        import sklearn

        model = self.embedder.model
        return {
            "data_sha256": self.data_sha256,
            "policy_id": self.policy.policy_id,
            "rule_ids": self.policy.rule_ids,
            "rule_labels": self.rule_labels,
            "rule_features": self.rule_features,
            "c": self.c,
            "embedder": {"name": model.name, "sha256": model.sha256},
            "sklearn": sklearn.__version__,
        }

    def save(self, folder: str | Path) -> Path:
        import joblib

        if self._violation is None:
            raise RuntimeError("nothing to save: the classifier is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(
            {"violation": self._violation, "rules": self._rules, "sentence": self._sentence}, folder / "model.joblib"
        )
        (folder / "meta.json").write_text(json.dumps(self._meta(), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, policy: Policy, embedder: Embedder | None = None) -> ConformanceClassifier:
        """A saved classifier, refused when its features would not mean the same: other rule ids, another
        embedding model or another scikit-learn (whose pickles are not portable across versions)."""
        import joblib
        import sklearn

        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise InputError("no saved conformance classifier here (meta.json is missing)", file=folder)
        meta = json.loads(meta_path.read_text())
        clf = cls(policy, embedder, rule_features=meta["rule_features"], c=meta["c"])
        model = clf.embedder.model
        mismatches = [
            (field, saved, now)
            for field, saved, now in (
                ("rule_ids", meta["rule_ids"], policy.rule_ids),
                ("embedder", meta["embedder"], {"name": model.name, "sha256": model.sha256}),
                ("sklearn", meta["sklearn"], sklearn.__version__),
            )
            if saved != now
        ]
        if mismatches:
            field, saved, now = mismatches[0]
            raise InputError(
                f"saved with {saved!r}, now {now!r}; fit the classifier again", file=meta_path, field=field
            )
        heads = joblib.load(folder / "model.joblib")
        clf._violation, clf._rules, clf._sentence = heads["violation"], heads["rules"], heads["sentence"]
        clf.rule_labels, clf.data_sha256 = meta["rule_labels"], meta["data_sha256"]
        return clf


def fit_from_seeds(
    policy: Policy,
    seeds: Sequence[Record],
    negatives: Sequence[Record],
    cfg: ClassifierConfig,
    embedder: Embedder | None = None,
) -> ConformanceClassifier:
    """The classifier as curation uses it: fitted on human training seeds (conformant) and the contrastive
    negatives built from them (`ballast.generate.contrastive`; the pipeline hands over the ones already in
    curate's input). `seeds` must not include held-out records: the negatives copy their prompts."""
    return ConformanceClassifier(policy, embedder, rule_features=cfg.rule_features).fit(list(seeds), list(negatives))
