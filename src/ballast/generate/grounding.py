"""Policy-grounded prompts: the rules that apply to an instruction and the nearest human seeds, in the prompt.

Rules are found two ways: the policy's escalation triggers (PolicyChecker.triggered: a rule that fires must
be in the prompt) and MiniLM embeddings of the rule texts (the nearest ones above a similarity floor fill
the remaining places). The nearest human training seeds become worked examples (earlier chat turns), within
a word budget so the prompt fits the weak model's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ballast.backends.base import Embedder, Message
from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy
from ballast.recipe import GroundingConfig
from ballast.records import Record
from ballast.templates import load_template
from ballast.templates.prompts import user_content
from ballast.templates.render import render

TEMPLATE = "generate/grounded"


@dataclass(frozen=True)
class Grounding:
    rules: list[str]  # rule ids, triggered ones first
    examples: list[Record]  # nearest human training seeds, nearest first


class PolicyGrounding:
    def __init__(
        self, policy: Policy, seeds: Sequence[Record], cfg: GroundingConfig, embedder: Embedder | None = None
    ) -> None:
        if embedder is None:
            from ballast.backends.minilm import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self.policy, self.cfg, self.embedder = policy, cfg, embedder
        self.checker = PolicyChecker(policy)
        self.template = load_template(TEMPLATE)
        self.seeds = [s for s in seeds if s.output.strip()]
        self._rule_vectors = embedder.embed([f"{r.title}. {r.text}" for r in policy.rules])
        self._seed_vectors = (
            embedder.embed([user_content(s.instruction, s.input) for s in self.seeds])
            if self.seeds
            else np.zeros((0, self._rule_vectors.shape[1]), np.float32)
        )

    def plan(self, pairs: Sequence[tuple[str, str]]) -> list[Grounding]:
        """Rules and examples for each (instruction, input), embedded in one batch."""
        if not pairs:
            return []
        queries = self.embedder.embed([user_content(i, x) for i, x in pairs])
        rule_sims = queries @ self._rule_vectors.T
        seed_sims = queries @ self._seed_vectors.T
        plans = []
        for k, (instruction, input) in enumerate(pairs):
            rules = list(dict.fromkeys(self.checker.triggered(instruction, input)))
            for j in np.argsort(-rule_sims[k]):
                if len(rules) >= self.cfg.max_rules or rule_sims[k, j] < self.cfg.min_rule_similarity:
                    break
                if self.policy.rules[j].id not in rules:
                    rules.append(self.policy.rules[j].id)
            query_text = user_content(instruction, input)
            examples, words = [], 0
            for j in np.argsort(-seed_sims[k]):
                if len(examples) >= self.cfg.examples:
                    break
                seed = self.seeds[j]
                size = len(f"{seed.instruction} {seed.input} {seed.output}".split())
                # The same text is the seed itself (a paraphrase parent, say): showing it is no example.
                if (
                    user_content(seed.instruction, seed.input) == query_text
                    or words + size > self.cfg.max_example_words
                ):
                    continue
                examples.append(seed)
                words += size
            plans.append(Grounding(rules, examples))
        return plans

    def messages(self, instruction: str, input: str, grounding: Grounding) -> list[Message]:
        rules = (
            "\n".join(
                f"- {rid} {self.policy.by_id[rid].title}: {self.policy.by_id[rid].text}" for rid in grounding.rules
            )
            or "- (no specific rule found; follow the policy as usual)"
        )
        system = render(self.template, company=self.policy.company, rules=rules, sign_off=self.policy.sign_off)
        messages: list[Message] = [{"role": "system", "content": system}]
        for seed in grounding.examples:
            messages.append({"role": "user", "content": user_content(seed.instruction, seed.input)})
            messages.append({"role": "assistant", "content": seed.output})
        messages.append({"role": "user", "content": user_content(instruction, input)})
        return messages
