"""The generate stage as the recipe wires it: only Self-Instruct by default; every generator on when asked,
with its template ids and hashes on the records and in the manifest; a server in place of llama.cpp."""

from __future__ import annotations

from pathlib import Path

from ballast.backends.base import Generation
from ballast.backends.calls import CallLog
from ballast.backends.factory import backend_for
from ballast.backends.openai_http import OpenAIBackend
from ballast.generate.stage import generate_records, templates_used
from ballast.recipe import GenerateConfig, load_recipe
from ballast.records import ModelRef, Source

TINY = Path(__file__).parent / "data" / "tiny_recipe.yaml"


class Anything:
    """A model that always gives a usable answer of the kind the prompt asks for."""

    model = ModelRef(name="anything")

    def generate(self, prompts, decoding, on_result=None):
        out = []
        for i, p in enumerate(prompts):
            text = p if isinstance(p, str) else p[-1]["content"]
            if isinstance(p, str) and text.endswith(":") and "Come up with" in text:
                gen = Generation(text=f" Explain the warranty route for item {len(text) % 97} to a new colleague.")
            elif "Not Equal" in text:
                gen = Generation(text="Not Equal")
            elif "#Rewritten Prompt#:" in text or "#Created Prompt#:" in text:
                gen = Generation(text="Explain the refund timeline and name the rule that sets it, in two steps.")
            elif "Rewritten request:" in text:
                gen = Generation(text="Could you put together a short reply for this customer?")
            else:
                gen = Generation(
                    text="Thank you for your message. A colleague will follow up with the details.",
                    completion_tokens=12,
                )
            out.append(gen)
            if on_result:
                on_result(i, gen)
        return out


def test_defaults_turn_on_self_instruct_only():
    cfg = GenerateConfig()
    assert cfg.self_instruct.enabled and cfg.self_instruct.mode == "responses"
    assert not (cfg.evol.enabled or cfg.paraphrase.enabled or cfg.template_slots.enabled or cfg.contrastive.enabled)
    assert cfg.responses.mode == "plain" and cfg.server is None
    assert list(templates_used(cfg)) == ["generate/self_instruct"]


def test_every_generator_wired_into_one_stage(seeds, policy, tmp_path):
    recipe = load_recipe(
        TINY,
        [
            "generate.self_instruct.num_instructions=2",
            "generate.self_instruct.max_requests=2",
            "generate.evol.enabled=true",
            "generate.evol.rounds=1",
            "generate.evol.max_seeds=2",
            "generate.paraphrase.enabled=true",
            "generate.paraphrase.max_seeds=2",
            "generate.contrastive.enabled=true",
            "generate.contrastive.max_seeds=5",
            "generate.template_slots.enabled=true",
            "generate.template_slots.total=2",
            "generate.template_slots.slots={channel: [chat, email], product: [lamp, rug]}",
            (
                "generate.template_slots.templates=[{id: t1, instruction: 'Draft a {channel} reply.', "
                "input: 'My {product} broke.', slice: returns}]"
            ),
        ],
    )
    log = CallLog(tmp_path / "calls.jsonl")
    train = [s for s in seeds if s.meta["ref"] not in ("RET-001",)]
    records, counts = generate_records(train, Anything(), recipe.generate, recipe.seed, policy, log=log)
    sources = {r.source for r in records}
    assert sources == {Source.self_instruct, Source.evol, Source.paraphrase, Source.template, Source.contrastive}
    assert counts["self_instruct.records"] == 2 and counts["self_instruct.kept"] >= 1
    assert counts["evol.kept"] == 2 and counts["paraphrase.kept"] == 2
    assert counts["template_slots.kept"] == 2 and counts["contrastive.records"] > 0
    assert counts["calls_failed"] == 0
    assert counts["calls_ok"] == len((tmp_path / "calls.jsonl").read_text().splitlines())
    used = templates_used(recipe.generate)
    assert {"generate/self_instruct", "generate/evol_equal", "generate/paraphrase", "recipe:t1"} <= set(used)
    for r in records:
        assert r.decisions and r.decisions[0].stage.startswith("generate.")
        if r.source is not Source.contrastive:
            assert r.template_id in used and r.template_sha256 == used[r.template_id], r.template_id


def test_a_server_in_the_recipe_replaces_llama_cpp():
    server = "{base_url: 'http://127.0.0.1:9/v1', model: smollm2, concurrency: 8, requests_per_second: 2.5}"
    recipe = load_recipe(TINY, [f"generate.server={server}"])
    backend = backend_for(recipe.generate.server, recipe.models.weak)
    assert isinstance(backend, OpenAIBackend) and backend.concurrency == 8
    assert backend.limiter is not None and backend.limiter.interval == 0.4
