"""Evol-Instruct: the four elimination rules, each named on the record it removed; parents go back to the
pool; and a short run on the real weak model."""

from __future__ import annotations

from ballast.backends.base import Decoding, Generation
from ballast.generate.evol import clean_evolved, evolve, is_refusal, only_stop_words, parse_judgement
from ballast.generate.responses import Responder
from ballast.recipe import DecodingConfig, EvolConfig
from ballast.records import ModelRef, Record, Source


class Scripted:
    """Evolves each seed by its position: a copied label, an Equal verdict, a refusal, stop words, or fine."""

    model = ModelRef(name="scripted")

    def generate(self, prompts, decoding):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            if "#Rewritten Prompt#:" in text or "#Created Prompt#:" in text:
                given = text.split("Prompt#:\n", 1)[1].split("\n\n#", 1)[0]
                out.append(Generation(text=self.evolve(given)))
            elif "Not Equal" in text:  # the judge
                out.append(Generation(text="Equal" if "SAME" in text.split("Second instruction:")[1] else "Not Equal"))
            elif "REFUSE" in text:
                out.append(Generation(text="Sorry, I cannot help with that request."))
            elif "STOPWORDS" in text:
                out.append(Generation(text="It is, of the... and so on!"))
            else:
                out.append(Generation(text="A full answer with several useful steps for the agent to follow."))
        return out

    @staticmethod
    def evolve(given: str) -> str:
        for marker, text in (
            ("copy", "#Rewritten Prompt#: as the given prompt says, do more"),
            ("same", "SAME request, nothing new added at all"),
            ("refuse", "REFUSE to do this harder request with three constraints"),
            ("stop", "STOPWORDS please, with two more constraints added"),
        ):
            if marker in given:
                return text
        return f"#Rewritten Prompt#:\n{given} Also list the three policy rules that apply."


def test_elimination_helpers():
    cfg = EvolConfig()
    assert clean_evolved("#Rewritten Prompt#: Explain the refund rule.") == "Explain the refund rule."
    assert clean_evolved('"Quote me."') == "Quote me."
    assert is_refusal("Sorry, I can't do that.", cfg)
    assert not is_refusal("Sorry for the wait. " + "word " * 80, cfg)  # long enough to be an answer
    assert only_stop_words("It is, of the... and so on!") and not only_stop_words("The refund takes 5 days.")
    assert parse_judgement("Not Equal") is False and parse_judgement("Equal.") is True
    assert parse_judgement("Banana") is None


def test_each_elimination_rule_is_named_and_the_parent_goes_back():
    picked = [
        Record(instruction=f"{marker}: handle this ticket", output="Done.", source=Source.human)
        for marker in ("copy", "same", "refuse", "stop", "fine")
    ]
    gen = Scripted()
    responder = Responder(gen, Decoding(), "Harbor")
    cfg = EvolConfig(rounds=2, max_seeds=None, methods=["constraints"])
    records, counts = evolve(picked, gen, cfg, responder, "policy", seed=0)
    assert all(r.source is Source.evol and r.template_id == "generate/evol_constraints" for r in records)
    first = {r.parent_ids[0]: r for r in records if r.round == 1}
    by_marker = {p.instruction.split(":")[0]: first[p.id] for p in picked}
    assert by_marker["copy"].decisions[0].reason.startswith("elimination 4 (copied prompt words)")
    assert by_marker["same"].decisions[0].reason.startswith("elimination 1 (no information gain)")
    assert by_marker["refuse"].decisions[0].reason.startswith("elimination 2 (refusing response)")
    assert by_marker["stop"].decisions[0].reason.startswith("elimination 3 (only punctuation and stop words)")
    assert by_marker["fine"].kept and by_marker["fine"].meta["judge"] == "not_equal"
    assert by_marker["copy"].meta["elimination"] == "4:copied_prompt_words"
    # Round 2: eliminated parents were evolved again from the seed; the survivor from its evolution.
    second = {r.parent_ids[0] for r in records if r.round == 2}
    assert {p.id for p in picked if not p.instruction.startswith("fine")} <= second
    assert by_marker["fine"].id in second
    assert counts["evolved"] == 2 and counts["elimination_4"] == 2


def test_a_short_run_on_the_weak_model(weak, seeds):
    responder = Responder(weak, Decoding(temperature=0.7, max_tokens=48, seed=1), "Harbor Home Goods")
    cfg = EvolConfig(rounds=1, max_seeds=3, decoding=DecodingConfig(temperature=0.7, top_p=0.95, max_tokens=64))
    records, counts = evolve(seeds[:30], weak, cfg, responder, "harbor", seed=3)
    assert len(records) == 3 and sum(counts.values()) >= 3
    for r in records:
        assert r.generator.sha256 == weak.model.sha256 and r.template_sha256 and r.round == 1
        reason = r.decisions[0].reason
        assert r.kept or reason.startswith(("elimination ", "weak model failed", "no evolved"))
        assert r.meta["method"] in cfg.methods
