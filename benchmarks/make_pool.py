"""Build a deterministic pool of support-domain records with known near-duplicate ground truth.

    python benchmarks/make_pool.py --out ~/.cache/ballast/benchmarks/pool.parquet   # 300,000 records
    python benchmarks/make_pool.py --out /tmp/pool20k.parquet --records 20000

A benchmark fixture, never training data: sentences of the training seeds (the held-out quarter is never read)
are recombined with generated names, products, numbers and situations into records that are genuinely distinct
from each other, and some of them are copied with edits of known strength. Every record's `meta` holds

    cluster   the id shared by a record and every copy made from it
    kind      unique (no copies), original (copies exist), exact, near, bad (malformed input)
    strength  for copies: verbatim or format (exact), light, medium or heavy (near); for bad records, what is wrong

Which record of a cluster comes first depends only on the (seeded) pool order; a curation that keeps the first
record of each cluster and drops the rest is perfect. Edit strengths:
    light   two or three word edits (synonym, neighbour swap, deletion) in the response, maybe one in the instruction
    medium  two response sentences swap places, six to nine word edits, one or two in the instruction and input
    heavy   paraphrase-like rewrite: the instruction retold (situation first, in other words, a detail left out),
            phrase-level rewrites, a response sentence dropped, a filler sentence added, sentences reordered, a
            dozen word edits: most shingles and much of the instruction's word order change, the meaning does not
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "harbor-support"

FIRST = """Aisha Alan Amara Anders Ana Ben Bea Carlos Chen Chloe Dara Daniel Deepa Elena Emil Erin Farah Felix Fiona
Gabriel Grace Hana Hugo Ines Isaac Ivy Jack Jana Joao Kai Kemi Lars Laura Leo Lina Luca Maya Mei Mia Nadia Nikhil
Noah Nora Omar Olga Paul Priya Quinn Rafael Rosa Ruth Sami Sara Sofia Tariq Tess Tom Uma Victor Wen Yara Yusuf Zoe
Agnes Bruno Cleo Dmitri Esther Frank Greta Hamid Irene Jonas Kofi Leila Marta Nils Oren Petra Rohan Selma Theo
Ulla Vera Walter Xena Yosef Zara""".split()
LAST = """Okafor Bianchi Harris Chen Appleby Lindqvist Benedetti Novak Silva Tanaka Murphy Kowalski Haddad Jensen
Moreau Schmidt Rossi Nguyen Patel Garcia Kim Osei Petrov Larsen Costa Dubois Fischer Ivanova Khan Lopez Mensah
Nakamura Olsen Quinn Reyes Sato Torres Varga Weber Yilmaz Zhang Ahmed Brennan Castillo Dlamini Eriksen Ferreira
Gallo Horvat Ibrahim Jovanovic Keller Lund Mazur Nieminen Obi Pereira Rahman Sousa Tran Ueda Vidal Wood""".split()
MATERIAL = """oak walnut ash teak bamboo linen cotton wool velvet leather rattan marble ceramic glass steel copper brass
jute bouclé cedar pine birch stoneware enamel slate terracotta mohair cashmere seagrass travertine""".split()
ITEM = """sofa|armchair|bookcase|rug|lamp|blender|kettle|toaster|mattress|duvet|pillow|bed frame|dining table|
coffee table|desk chair|wardrobe|dresser|mirror|curtain set|towel set|cookware set|knife block|stand mixer|
vacuum cleaner|air purifier|side table|bar stool|bench|shoe rack|ottoman|floor lamp|pendant light|throw blanket|
bath mat|shower curtain|plant stand|wall clock|dinner set|glassware set|coat stand|crib|high chair|sideboard|
console table|nightstand|headboard|chest of drawers""".replace("\n", "").split("|")
STYLE = """Wren Calder Breeze Harbor Aster Juniper Linden Maple Nova Orla Pebble Quill Rowan Saffron Tidal Umber Vesper
Willow Yarrow Zephyr Alder Birchwood Cove Drift Ember Fern Glen Heath Isla Kestrel Loch Moss Nook Oasis""".split()
CHANNEL = ["chat", "email", "phone", "web form", "social media message", "app message"]
ISSUE = """wants to return|reports a deep scratch on|says a leg is missing from|has not yet received|asks how to clean|
wants a refund for|reports a strong smell from|asks whether the warranty covers|received the wrong colour of|
says the delivery team damaged|wants to change the delivery address for|asks to cancel the order for|
reports a wobbling joint on|says the box arrived crushed with|is unhappy with the fabric of|
wants to exchange|asks for assembly instructions for|reports a burnt-out motor in|says the wrong size arrived for|
was charged twice for|asks about a price drop on|wants to know when we restock|reports a cracked panel on|
asks if we can collect|received only half of|complains about the noise from|asks about care for|
says the colour faded on|lost the receipt for|wants to gift|asks whether membership covers|
is asking about the late delivery of|wants a goodwill credit for|disputes the charge for|reports rust on""".replace(
    "\n", ""
).split("|")
WHEN = [
    "{d} days after delivery",
    "{d} days ago",
    "within a week of delivery",
    "on the day it arrived",
    "after {w} weeks of use",
    "{m} months after buying it",
    "the morning after delivery",
    "before unpacking it",
    "during assembly",
    "after the second wash",
    "at the weekend",
    "{d} days late",
]
ASK = [
    "What should I tell them?",
    "What are the options?",
    "Can we approve this?",
    "Please keep it short.",
    "Explain the policy in plain words.",
    "Include the next steps.",
    "Mention the timeline.",
    "Do I need a supervisor?",
    "Be warm but clear.",
    "Say what happens next.",
    "",
    "",
    "",
]
FILLERS = [
    "Thank you for your patience while we look into this.",
    "I appreciate you taking the time to write to us.",
    "We value you as a customer.",
    "I hope the rest of your week goes well.",
    "Thanks again for bringing this to our attention.",
    "Please let me know if anything is unclear.",
]
SYNONYMS = {
    "reply": "response",
    "customer": "client",
    "order": "purchase",
    "refund": "reimbursement",
    "sorry": "apologetic",
    "help": "assist",
    "send": "ship",
    "return": "send back",
    "receive": "get",
    "received": "got",
    "quickly": "promptly",
    "shortly": "soon",
    "instructions": "directions",
    "contact": "reach",
    "email": "message",
    "confirm": "verify",
    "check": "review",
    "arrange": "organise",
    "issue": "problem",
    "item": "product",
    "days": "day",
    "please": "kindly",
    "thank": "thanks",
    "happy": "glad",
    "within": "inside",
    "business": "working",
    "replacement": "substitute",
    "damaged": "broken",
    "arrived": "came",
    "about": "regarding",
    "we": "our team",
    "can": "are able to",
    "will": "shall",
    "also": "as well",
    "because": "since",
    "need": "require",
    "let": "allow",
    "get": "obtain",
    "tell": "inform",
    "want": "wish",
    "ask": "request",
    "draft": "write",
    "summarise": "sum up",
    "answer": "respond to",
    "explain": "describe",
    "the": "this",
}
PARAPHRASES = [
    ("I'm sorry", "I apologise"),
    ("I am sorry", "My apologies"),
    ("Thank you for", "Many thanks for"),
    ("Kind regards", "Best wishes"),
    ("within 5–10 business days", "in five to ten working days"),
    ("as soon as", "the moment"),
    ("Please", "Could you please"),
    ("I will", "I'll be sure to"),
    ("you can", "you are able to"),
    ("We can", "Our team is able to"),
    ("let us know", "get in touch with us"),
    ("original packaging", "the box it came in"),
    ("return window", "returns period"),
    ("I have", "I've now"),
    ("Before you", "Prior to when you"),
    ("don't", "do not"),
    ("isn't", "is not"),
    ("can't", "cannot"),
    ("If you", "Should you"),
    ("to your card", "back to your card"),
    ("Draft a reply", "Write a response"),
    ("Draft a", "Write a"),
    ("Summarise", "Give a summary of"),
    ("What do I tell", "How should I answer"),
    ("Can I", "Am I allowed to"),
    ("customer", "shopper"),
]
BAD_TEXT = {
    "non_english_es": (
        "Redacta una respuesta a este cliente sobre su devolución.",
        "Hola, quiero devolver la alfombra que compré la semana pasada porque es demasiado grande.",
        "Gracias por escribirnos. Puede devolver la alfombra dentro de los treinta días siguientes "
        "a la entrega si está sin usar y en su embalaje original.",
    ),
    "non_english_zh": (
        "请给这位顾客写一封回复邮件。",
        "我上周买的沙发到货时有划痕，我想退货。",
        "感谢您联系我们。很抱歉沙发到货时有划痕。我们会为您安排免费更换或全额退款。",
    ),
    "non_english_ru": (
        "Напишите ответ этому клиенту.",
        "Здравствуйте, мой заказ пришёл повреждённым.",
        "Спасибо, что написали нам. Нам очень жаль, что заказ пришёл повреждённым.",
    ),
}

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])|\n+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if len(s.split()) >= 4]


def load_banks() -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Sentence banks per slice from the training seeds only (the held-out split is never read)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ballast.policy.schema import load_policy
    from ballast.seeds import load_seeds, split_heldout

    policy = load_policy(EXAMPLE / "policy.yaml")
    train = split_heldout(load_seeds(EXAMPLE / "seeds.jsonl", policy), 0.25, salt="heldout:13").train
    banks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    frames = []
    for r in train:
        frames.append(r.instruction.strip())
        for field in ("input", "output"):
            text = getattr(r, field)
            if field == "output":  # drop the sign-off and greeting lines; the composer writes its own
                text = "\n".join(
                    line
                    for line in text.splitlines()
                    if not re.match(r"^(Kind regards|\[Agent name\]|Harbor Home Goods Support|Dear |Hi )", line)
                )
            banks[r.slice][field].extend(sentences(text))
    frames = sorted({f for f in frames if len(f.split()) <= 14})
    return {k: dict(v) for k, v in banks.items()}, frames


def _numbers(text: str, rng: random.Random) -> str:
    return re.sub(
        r"\d+",
        lambda m: str(rng.randint(10 ** (len(m.group()) - 1) if len(m.group()) > 1 else 1, 10 ** len(m.group()) - 1)),
        text,
    )


class Composer:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.banks, self.frames = load_banks()
        self.slices = sorted(self.banks)
        # Short sentences from what customers wrote: a second, independent detail in each instruction, so that
        # two records sharing an instruction frame still differ in most of their words.
        self.details = sorted({s for b in self.banks.values() for s in b.get("input", []) if len(s.split()) <= 16})
        self.weights = [len(self.banks[s].get("output", [])) for s in self.slices]

    def original(self, cluster: int) -> tuple[str, str, str, str, str]:
        """(instruction, input, output, slice, the instruction retold for a paraphrase) of a new record, a
        function of the cluster number only."""
        rng = random.Random(f"{self.seed}:c{cluster}")
        sl = rng.choices(self.slices, self.weights)[0]
        bank = self.banks[sl]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        product = f"{rng.choice(STYLE)} {rng.choice(MATERIAL)} {rng.choice(ITEM)}"
        days, price = rng.randint(1, 120), rng.randint(9, 2400)
        when = rng.choice(WHEN).format(d=rng.randint(2, 60), w=rng.randint(2, 9), m=rng.randint(2, 11))
        frame = rng.choice(self.frames)
        issue = rng.choice(ISSUE)
        situation = f"{first} {last} {issue} the {product} {when}."
        detail = _numbers(rng.choice(self.details), rng)
        ask = rng.choice(ASK)
        instruction = " ".join(x for x in (frame, situation, detail, ask) if x)
        # how a paraphrase would tell the same task: the situation first and in other words, the detail left out
        retold = " ".join(
            x for x in (f"The customer, {first} {last}, {issue} their {product} ({when}).", frame, ask) if x
        )
        said = rng.sample(
            bank.get("input") or bank["output"], k=min(len(bank.get("input", [])) or 1, rng.randint(2, 4))
        )
        channel = rng.choice(CHANNEL)
        member = rng.choice(["Harbor Plus member.", "Not a Harbor Plus member.", "Membership lapsed last year."])
        inp = (
            f"Customer ({channel}): "
            + " ".join(_numbers(s, rng) for s in said)
            + f"\n\nOrder Console: {product}, USD {price}. Delivered {days} days ago. {member} "
            f"Order HH-{rng.randint(1000000, 9999999)}."
        )
        body = rng.sample(bank["output"], k=min(len(bank["output"]), rng.randint(3, 6)))
        greeting = rng.choice(["Dear", "Hi", "Hello"]) + f" {first},"
        output = (
            f"{greeting}\n\n"
            + " ".join(_numbers(s, rng) for s in body)
            + f" Your {product} is order HH-{rng.randint(1000000, 9999999)}."
            "\n\nKind regards,\n[Agent name]\nHarbor Home Goods Support"
        )
        return instruction, inp, output, sl, retold


def _word_edits(text: str, n: int, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(n):
        if len(words) < 3:
            break
        i = rng.randrange(len(words) - 1)
        op = rng.random()
        key = re.sub(r"\W", "", words[i]).lower()
        if op < 0.5 and key in SYNONYMS:
            words[i] = words[i].replace(key, SYNONYMS[key]) if words[i].islower() else SYNONYMS[key]
        elif op < 0.8:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            del words[i]
    return " ".join(words)


def _sentence_list(output: str) -> tuple[str, list[str], str]:
    head, _, rest = output.partition("\n\n")
    body, _, tail = rest.rpartition("\n\n")
    return head, re.split(r"(?<=[.!?]) ", body), tail


def _format_variant(text: str, rng: random.Random) -> str:
    """Same normalised text: case, spacing and punctuation change."""
    words = text.split(" ")
    for _ in range(3):
        i = rng.randrange(len(words))
        words[i] = rng.choice([words[i].upper(), words[i].lower(), words[i].capitalize(), words[i] + ","])
    return "  ".join(words[:2]) + " " + " ".join(words[2:]) + rng.choice(["", " ", "!", " ."])


def copy_of(
    original: tuple[str, str, str, str, str], kind: str, strength: str, rng: random.Random
) -> tuple[str, str, str]:
    inst, inp, out, _, retold = original
    if strength == "verbatim":
        return inst, inp, out
    if strength == "format":
        return _format_variant(inst, rng), inp, _format_variant(out, rng)
    head, body, tail = _sentence_list(out)
    if strength == "light":
        body_text = _word_edits(" ".join(body), rng.randint(2, 3), rng)
        inst = _word_edits(inst, rng.randint(0, 1), rng)
    elif strength == "medium":
        if len(body) >= 2:
            i, j = rng.sample(range(len(body)), 2)
            body[i], body[j] = body[j], body[i]
        body_text = _word_edits(" ".join(body), rng.randint(6, 9), rng)
        inst = _word_edits(inst, rng.randint(1, 2), rng)
        inp = _word_edits(inp, 1, rng)
    else:  # heavy: a paraphrase-like rewrite
        text = " ".join(body)
        for a, b in rng.sample(PARAPHRASES, k=len(PARAPHRASES)):
            if a in text and rng.random() < 0.8:
                text = text.replace(a, b)
        body = re.split(r"(?<=[.!?]) ", text)
        if len(body) > 3:
            del body[rng.randrange(len(body))]
        rng.shuffle(body)
        body.insert(rng.randrange(len(body) + 1), rng.choice(FILLERS))
        body_text = _word_edits(" ".join(body), rng.randint(10, 14), rng)
        inst = retold
        for a, b in PARAPHRASES:
            inst = inst.replace(a, b)
        inst = _word_edits(inst, rng.randint(2, 3), rng)
        inp = _word_edits(inp, rng.randint(2, 4), rng)
        head = head.replace("Dear", "Hello").replace("Hi ", "Dear ")
    return inst, inp, f"{head}\n\n{body_text}\n\n{tail}"


def plan(records: int, seed: int) -> list[tuple[int, str, str]]:
    """(cluster, kind, strength) for every record, in pool order. About 40% of the pool are copies."""
    rng = random.Random(f"{seed}:plan")
    n_bad = min(300, records // 1000)
    n_copies = int(records * 0.4)
    n_originals = n_copies // 3
    n_unique = records - n_bad - n_copies - n_originals
    specs = [(c, "unique", "") for c in range(n_unique)]
    originals = range(n_unique, n_unique + n_originals)
    specs += [(c, "original", "") for c in originals]
    strengths = ["verbatim", "format", "light", "medium", "heavy"]
    share = [0.12, 0.13, 0.25, 0.25, 0.25]
    for i in range(n_copies):
        # every original gets at least one copy, the rest go at random
        c = originals[i] if i < n_originals else rng.choice(originals)
        s = rng.choices(strengths, share)[0]
        specs.append((c, "exact" if s in ("verbatim", "format") else "near", s))
    bad_kinds = ["empty_instruction", "very_long", "not_utf8", *BAD_TEXT]
    base = n_unique + n_originals
    specs += [(base + i, "bad", bad_kinds[i % len(bad_kinds)]) for i in range(n_bad)]
    rng.shuffle(specs)
    return specs


def build(records: int, seed: int) -> pa.Table:
    sys.path.insert(0, str(ROOT / "src"))
    from ballast.records import Record, Source
    from ballast.store import to_table

    composer = Composer(seed)
    specs = plan(records, seed)
    cache: dict[int, tuple[str, str, str, str, str]] = {}
    copies = defaultdict(int)
    tables, batch = [], []
    for cluster, kind, strength in specs:
        if kind == "bad":
            rng = random.Random(f"{seed}:bad{cluster}")
            inst, inp, out, sl, _ = composer.original(cluster)
            if strength == "empty_instruction":
                inst = ""
            elif strength == "very_long":
                out = (out + " ") * (100_000 // len(out) + 1)
                out = out[:100_000]
            elif strength == "not_utf8":  # what a lenient decoder leaves of bytes that were not UTF-8
                inst = inst.replace("e", "\ufffd", 3)
                out = out.replace("a", "\ufffd\ufffd", 4)
            else:
                inst, inp, out = BAD_TEXT[strength]
                inst = f"{inst} {rng.randint(1, 10**6)}"
        else:
            if cluster not in cache:
                cache[cluster] = composer.original(cluster)
            original = cache[cluster]
            sl = original[3]
            if kind in ("unique", "original"):
                inst, inp, out = original[:3]
            else:
                copies[cluster] += 1
                rng = random.Random(f"{seed}:c{cluster}:v{copies[cluster]}")
                inst, inp, out = copy_of(original, kind, strength, rng)
            if kind == "unique":
                del cache[cluster]
        batch.append(
            Record(
                instruction=inst,
                input=inp,
                output=out,
                source=Source.self_instruct,
                slice=sl,
                meta={
                    "cluster": str(cluster),
                    "kind": kind,
                    "strength": strength,
                    "fixture": "benchmarks/make_pool.py",
                },
            )
        )
        if len(batch) == 20_000:
            tables.append(to_table(batch))
            batch = []
    if batch:
        tables.append(to_table(batch))
    return pa.concat_tables(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from ballast.store import write_table

    start = time.perf_counter()
    table = build(args.records, args.seed)
    write_table(table, args.out)
    kinds = pa.table({"m": table.column("meta")}).column("m").to_pylist()
    counts: dict[str, int] = defaultdict(int)
    for m in kinds:
        d = dict(m)
        counts[d["kind"] + (f"/{d['strength']}" if d["strength"] else "")] += 1
    print(
        f"wrote {len(table)} records to {args.out} in {time.perf_counter() - start:.1f}s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )


if __name__ == "__main__":
    main()
