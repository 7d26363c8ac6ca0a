from __future__ import annotations

import re

import pytest
import yaml

from ballast.policy.checks import PolicyChecker
from ballast.policy.schema import Policy
from conftest import EXAMPLE

SIGN = "\n\nKind regards,\n[Agent name]\nHarbor Home Goods Support"
DRAFT = "Draft a reply to this customer."
ASK = "Quick question about the policy."

# (rule id, instruction, input, output): each reply breaks exactly that rule and nothing else.
VIOLATIONS = [
    # facts
    ("R1", DRAFT, "", "You're within our 45-day return window, so you can send it back." + SIGN),
    ("R1", DRAFT, "", "Harbor Plus members get 90 days to return items." + SIGN),
    ("R1", DRAFT, "", "Our return window is thirty-five days from delivery." + SIGN),
    ("R3", DRAFT, "", "Refunds reach your card within 3 business days of us receiving the item." + SIGN),
    ("R4", ASK, "", "Items that arrive damaged must be reported within 14 days of delivery."),
    ("R5", ASK, "", "Agents can approve refunds up to USD 1,000 without a supervisor."),
    ("R5", ASK, "", "Your approval limit is $750 per order."),
    ("R6", ASK, "", "Agents may add up to USD 50 in goodwill credit per customer."),
    ("R6", ASK, "", "Goodwill credit is limited to once every 6 months."),
    ("W1", DRAFT, "", "The sofa comes with a 3-year warranty." + SIGN),
    ("W1", DRAFT, "", "Kitchenware has an 18-month warranty." + SIGN),
    ("D2", ASK, "", "A parcel counts as lost after 5 business days without a scan."),
    ("P3", ASK, "", "Data requests are completed within 45 days."),
    ("M1", DRAFT, "", "Harbor Plus costs USD 99 a year." + SIGN),
    ("M1", DRAFT, "", "You can get a full refund of the membership fee within 30 days of renewal." + SIGN),
    # escalation and required terms
    (
        "E1",
        DRAFT,
        "Customer: my son burned his hand on the kettle.",
        "I'm sorry to hear that. We will send a replacement kettle." + SIGN,
    ),
    (
        "E1",
        DRAFT,
        "Customer: my son burned his hand on the kettle.",
        "I'm sorry to hear that. I am passing this to our Product Safety team." + SIGN,
    ),
    (
        "E2",
        DRAFT,
        "Customer: I've spoken to my lawyer about this.",
        "I'm sorry for the trouble. I will look into it." + SIGN,
    ),
    (
        "E3",
        DRAFT,
        "Customer: I've filed a chargeback with my bank.",
        "I'll refund you directly now so you can cancel the chargeback." + SIGN,
    ),
    (
        "E4",
        DRAFT,
        "Customer: This is the third time I've contacted you about the missing leg.",
        "I'm sorry. I'll look into the missing leg." + SIGN,
    ),
    (
        "E5",
        DRAFT,
        "Customer: I can't go on like this.",
        "I'm so sorry. I'm passing this to our Tier 2 team now." + SIGN,
    ),
    ("E5", DRAFT, "Customer: I can't go on like this.", "I'm so sorry. [Crisis line] is there for you." + SIGN),
    ("P3", DRAFT, "Customer: Please delete all my data.", "I've deleted your account data for you." + SIGN),
    # forbidden phrasing
    ("R3", DRAFT, "", "Your refund will be issued to a gift card." + SIGN),
    ("R3", DRAFT, "", "Your refund will reach you within 48 hours." + SIGN),
    ("R3", DRAFT, "", "We can give you cash instead." + SIGN),
    ("R8", DRAFT, "", "We will match the price you found." + SIGN),
    ("R8", DRAFT, "", "I can credit you the price difference." + SIGN),
    ("W1", "Can you approve this claim?", "", "I approved your warranty claim this morning."),
    ("W1", DRAFT, "", "Good news: your warranty claim has been approved." + SIGN),
    ("D1", DRAFT, "", "Your sofa will arrive by Friday." + SIGN),
    ("D1", DRAFT, "", "I guarantee it will be delivered before the weekend." + SIGN),
    ("D1", DRAFT, "", "It should arrive on 14 March." + SIGN),
    (
        "P1",
        DRAFT,
        "Customer: Please change my address to my new flat.",
        "No need to verify anything, I've updated the address." + SIGN,
    ),
    ("P1", DRAFT, "", "We can skip verification this time." + SIGN),
    ("P1", ASK, "", "No verification is needed for a quick change like this."),
    ("P1", ASK, "", "Don't bother with the order number check; just update the details."),
    ("P1", ASK, "", "Make the change now and verify the customer afterwards if needed."),
    ("P1", ASK, "", "The email matches the account, so go ahead without asking for the phone digits."),
    ("P1", DRAFT, "", "We don't need your order number for this; I can make the change right away." + SIGN),
    ("P1", DRAFT, "", "Writing from the email address on file is enough to confirm it's you." + SIGN),
    ("P2", DRAFT, "", "Your card 4111 1111 1111 1111 was charged." + SIGN),
    ("P2", DRAFT, "", "We'll email you at jane.doe@example.com." + SIGN),
    ("P2", DRAFT, "", "We'll call you on 555-123-4567." + SIGN),
    ("P2", DRAFT, "", "We will collect it from 12 Marsh Lane." + SIGN),
    ("P4", DRAFT, "", "Please send us your password so we can check." + SIGN),
    ("P4", DRAFT, "", "Could you confirm your card number?" + SIGN),
    ("P4", DRAFT, "", "Can you tell me the one-time code we just texted?" + SIGN),
    ("C1", DRAFT, "", "You have a strong legal case against the manufacturer." + SIGN),
    ("C1", DRAFT, "", "Legally, we must replace it." + SIGN),
    ("C2", DRAFT, "", "Wayfair is cheaper, so try Wayfair instead." + SIGN),
    ("C2", DRAFT, "", "IKEA furniture is poor quality compared to ours." + SIGN),
    ("C3", DRAFT, "", "Our supervisor has approved your refund." + SIGN),
    ("C3", DRAFT, "", "I have processed your refund." + SIGN),
    ("C3", DRAFT, "", "Your replacement has been sent." + SIGN),
    ("T3", DRAFT, "", "You should have read the manual before assembling it." + SIGN),
    ("T3", DRAFT, "", "This happened because you failed to tighten the bolts." + SIGN),
    # register and form
    ("T1", DRAFT, "", "No worries lol, we'll sort it." + SIGN),
    ("T1", DRAFT, "", "Thanks so much!! We love it." + SIGN),
    ("T1", DRAFT, "", "Great news 😊" + SIGN),
    ("T1", DRAFT, "", "Hey there, gonna check." + SIGN),
    ("T4", DRAFT, "", "Thank you for your message."),
    ("T4", DRAFT, "", "Thank you for your message.\n\nKind regards,\nSam"),
    # found since the devset showed them missed: contractions, an inflected trigger
    ("C3", DRAFT, "", "Our warehouse has your throw, and I've processed your refund." + SIGN),
    ("C3", DRAFT, "", "Good news: we’ve issued the replacement, and I’ve processed the refund." + SIGN),
    (
        "E5",
        DRAFT,
        "Customer: I've been having thoughts of hurting myself.",
        "I'm so sorry. I am passing your message to our Tier 2 team." + SIGN,
    ),
    # cases: the input decides what the reply may grant
    (
        "R1",
        DRAFT,
        "Order Console: delivered 41 days ago. Not a Harbor Plus member.",
        "I'm sorry the rug didn't suit the room. I'm happy to accept the return on this occasion." + SIGN,
    ),
    (
        "R7",
        DRAFT,
        'Order Console: clearance rug, marked "Final sale". Delivered 5 days ago.',
        "Thank you for asking. We can take it back, and I'll send you the return instructions." + SIGN,
    ),
    ("D2", ASK, "Carrier Portal: last scan 4 business days ago.", "It counts as lost now."),
    ("R5", ASK, "Order Console: sofa, USD 820, returned unused.", "No supervisor is needed for this one."),
    (
        "E3",
        ASK,
        "Order Console: chargeback notice received today.",
        "Tell the Payments Risk team, then issue a refund now to settle it.",
    ),
    (
        "M1",
        DRAFT,
        "Membership Admin: renewed 3 months ago.",
        "Thank you for your message. I'll cancel it and refund the fee to your card." + SIGN,
    ),
    # acknowledgement first, no invented specifics, the subject of a fact
    (
        "T2",
        DRAFT,
        "Customer: my lamp arrived broken.",
        "Please send us a photo of the damage. I'm sorry it arrived like this." + SIGN,
    ),
    (
        "T5",
        DRAFT,
        "Order Console: tracking number field empty.",
        "Thank you for asking. Your tracking number is 7QH 4402 1189 5GB." + SIGN,
    ),
    ("W1", DRAFT, "", "Our furniture carries a 1-year warranty against manufacturing defects." + SIGN),
    ("T5", DRAFT, "Order Console: order total USD 119.", "Thank you for asking. Your order total was USD 129." + SIGN),
    (
        "T5",
        DRAFT,
        "Order Console: dispatched, no delivery scan yet.",
        "Thank you for asking. Our records show it was delivered on 14 November." + SIGN,
    ),
]

# Conformant replies that sit close to a violation: none may produce a finding.
NEAR_MISSES = [
    (
        ASK,
        "",
        "We cannot update it without asking for the order number and the last four digits of the phone "
        "number on file, even for a quick change.",
    ),
    (
        ASK,
        "",
        "Your email address alone is not enough to confirm it's you; please send the order number and the "
        "last four digits of the phone number on file.",
    ),
    (ASK, "", "Verify the customer first with the order number and the last four digits, then make the change."),
    (DRAFT, "", "You're within our 30-day return window: returns are accepted within 30 days of delivery." + SIGN),
    (DRAFT, "", "Harbor Plus members have a sixty-day return window." + SIGN),
    (DRAFT, "", "Your refund will reach your original payment method within 5–10 business days." + SIGN),
    (DRAFT, "", "Refunds take between 5 and 10 business days after the warehouse receives the item." + SIGN),
    (DRAFT, "", "The refund will go back to the card ending in 4321." + SIGN),
    (
        "Can I accept this return?",
        "Order Console: delivered 41 days ago, order total USD 640.",
        "It was delivered 41 days ago, so it is outside the 30-day return window. At USD 640 the refund would "
        "also be above your USD 500 limit.",
    ),
    (
        DRAFT,
        "",
        "I'm sorry the lamp arrived damaged. Because you told us within 7 days of delivery, you can "
        "choose a free replacement or a full refund, with no return shipping cost." + SIGN,
    ),
    (ASK, "", "She has 8 days left in the 30-day return window. Day 16 is inside it."),
    (
        "Can I approve this?",
        "One order: bookcase USD 320 and desk chair USD 290.",
        "The refund would total USD 610, which is above your USD 500 limit, so a supervisor must approve it.",
    ),
    (
        ASK,
        "",
        "Furniture has a 2-year warranty and kitchenware a one-year warranty, so at 14 months the "
        "table is covered. A 24-month warranty is the same as two years.",
    ),
    (ASK, "", "The USD 79 Harbor Plus fee is refunded in full within two weeks of renewal if no benefit was used."),
    (ASK, "", "You can give up to USD 25 of goodwill credit per customer in any 12-month period."),
    (DRAFT, "", "Please do not send us your password; we will never ask for it." + SIGN),
    (DRAFT, "", "I can't promise a delivery date; the carrier estimates Tuesday to Thursday." + SIGN),
    (DRAFT, "", "We are not able to refund by gift card or bank transfer; refunds go back to your card." + SIGN),
    (DRAFT, "Customer: I've spoken to my lawyer about this.", "I am passing your case to our Tier 2 team." + SIGN),
    (DRAFT, "Customer: Any tips for keeping my glasses sparkling?", "Rinse them in warm water." + SIGN),
    (
        DRAFT,
        "Customer: The chair tipped back, but no one was injured and there was no smoke or sparking.",
        "I'm sorry about the chair. Could you send a photo?" + SIGN,
    ),
    (
        DRAFT,
        "Customer: The lamp sparked and burned my hand.",
        "Please do not use the lamp again. I am passing your report to our Product Safety team." + SIGN,
    ),
    (
        DRAFT,
        "Order Console: refund of USD 850 approved by supervisor.",
        "I can confirm a supervisor has approved your refund of USD 850." + SIGN,
    ),
    (
        "What is wrong with my draft?",
        "",
        '"I\'ll get your refund sorted today" promises a speed that the policy does not allow.',
    ),
    ("Can I approve this refund?", "", "Yes, it is within your USD 500 limit."),
    (DRAFT, "", "Thank you for the lovely photo!" + SIGN),
    (DRAFT, "", "Thank you.\n  Kind regards,\n  [Agent name]\n  Harbor Home Goods Support  \n"),
    (
        ASK,
        "Membership Admin: renewed 16 days ago.",
        "The renewal was 16 days ago, so she is two days outside the 14-day period for a refund of the fee.",
    ),
    (DRAFT, "", "We won't refund the price difference, and we can't match other shops' prices." + SIGN),
    (DRAFT, "", "I've passed your request on; I haven't processed your refund yet." + SIGN),
    # the same stances where the case allows them, or a clause makes them conditional
    (
        DRAFT,
        "Membership Admin: Harbor Plus, active. Order Console: delivered 41 days ago.",
        "I'm sorry the rug didn't suit the room. I'm happy to accept the return." + SIGN,
    ),
    (
        DRAFT,
        'Order Console: "Final sale" lamp, arrived cracked; photo received.',
        "I'm sorry it arrived cracked. We can take it back at no cost to you." + SIGN,
    ),
    (
        ASK,
        "Carrier Portal: last scan 4 business days ago.",
        "A parcel only counts as lost 10 business days after the last scan, so open a carrier trace.",
    ),
    (
        ASK,
        "Carrier Portal: last scan 4 business days ago.",
        "As there is no new scan yet, open a carrier trace; if the parcel is still missing after 10 business days, "
        "treat it as lost.",
    ),
    (ASK, "Order Console: sofa, USD 820, returned unused.", "A supervisor must approve this refund first."),
    (
        DRAFT,
        "Customer: the handle on my new kettle is loose.",
        "I'm sorry the handle has come loose. Please send us a photo of it." + SIGN,
    ),
    (
        DRAFT,
        "Order HH-6604438: tracking 7QH 4402 1189 5GB.",
        "Thank you for asking. Your tracking number is 7QH 4402 1189 5GB for order HH-6604438." + SIGN,
    ),
    (ASK, "", "Kitchenware carries a 1-year warranty; furniture is covered for 2 years and textiles for 1 year."),
    (
        DRAFT,
        "Order Console: refund of USD 119 pending; goodwill credit USD 15 given in May.",
        "Thank you for waiting. Your USD 119 refund is pending, and USD 10 of goodwill credit remains this year."
        + SIGN,
    ),
]

# Human-written seeds the checks misread, each for a reason rules cannot see:
SEED_EXCEPTIONS: dict[str, list[str]] = {
    "RET-033": ["R7"],  # "you can accept them" means the standard cushions, not the custom loveseat beside them
    "PCT-041": ["R5"],  # the USD 1,150 refund is offered inside an "If you would prefer to return..." paragraph
    "RET-028": ["T2"],  # a rewrite about a refund the customer asked for; its only thanks is in the closing line
}


@pytest.fixture(scope="module")
def checker(policy):
    return PolicyChecker(policy)


@pytest.mark.parametrize(
    ("rule_id", "instruction", "input", "output"), VIOLATIONS, ids=[f"{v[0]}-{i}" for i, v in enumerate(VIOLATIONS)]
)
def test_violation_is_found_under_its_rule(checker, rule_id, instruction, input, output):
    assert {f.rule_id for f in checker.check(instruction, input, output)} == {rule_id}


def test_violations_cover_the_policy():
    assert len(VIOLATIONS) >= 40
    assert len({v[0] for v in VIOLATIONS}) >= 20


@pytest.mark.parametrize(("instruction", "input", "output"), NEAR_MISSES)
def test_near_miss_is_not_a_finding(checker, instruction, input, output):
    assert checker.check(instruction, input, output) == []


def test_spans_point_at_the_offending_text(checker):
    output = "Our return window is 45 days. No worries!" + SIGN
    spans = {f.rule_id: f.span for f in checker.check(DRAFT, "", output)}
    assert output[slice(*spans["R1"])] == "45"
    assert output[slice(*spans["T1"])] == "No worries"
    phrase = "Please send us your password."
    (finding,) = checker.check(ASK, "", phrase)
    assert finding.rule_id == "P4" and phrase[slice(*finding.span)] == "send us your password"


def test_spans_map_back_through_contractions(checker):
    output = "Thanks for waiting. I’ve processed your refund." + SIGN
    (finding,) = checker.check(DRAFT, "", output)
    assert finding.rule_id == "C3" and output[slice(*finding.span)] == "I’ve processed your refund"


def test_triggered_names_escalations_the_reply_must_state(checker):
    lawyer_and_shock = "My lawyer will hear about this, and the lamp gave me an electric shock."
    assert checker.triggered("Draft a reply.", lawyer_and_shock) == ["E1", "E2"]
    assert checker.triggered("Draft a reply.", "Third time I've asked. I'm thinking of a chargeback.") == ["E3", "E4"]
    assert checker.triggered("Draft a reply.", "The issue is the hospitality of your staff.") == []
    assert checker.triggered("Draft a reply.", "No injuries, no smoke, just a wobbly leg.") == []
    assert checker.triggered("Draft a reply.", "I keep thinking about ending my life.") == ["E5"]


def test_infer_audience(policy):
    infer = PolicyChecker.infer_audience
    assert infer("Summarise this ticket.", "Short summary" + SIGN, policy.sign_off) == "customer"
    assert infer("Draft a reply to this email.", "Thanks for writing.", policy.sign_off) == "customer"
    assert infer("Reply to this chat, please.", "Thanks.", policy.sign_off) == "customer"
    assert infer("Can I approve this refund?", "Yes.", policy.sign_off) == "agent"
    assert infer("Draft a message to my colleague Ana.", "Hi Ana,", policy.sign_off) == "agent"
    assert infer("Write a note for the Tier 2 handover.", "Summary:", policy.sign_off) == "agent"


def _raw_policy() -> dict:
    """policy.yaml as data, with the contrastive file it names read in (as load_policy does)."""
    raw = yaml.safe_load((EXAMPLE / "policy.yaml").read_text())
    raw["contrastive"] = yaml.safe_load((EXAMPLE / raw["contrastive"]).read_text())
    return raw


def test_the_checks_come_from_the_policy_file():
    raw = _raw_policy()
    r1 = next(r for r in raw["rules"] if r["id"] == "R1")
    r1["facts"][0]["value"] = 45
    raw["register"]["banned_phrases"].append("cheers")
    checker = PolicyChecker(Policy.model_validate(raw))
    found = {f.rule_id for f in checker.check(DRAFT, "", "Cheers, our return window is 45 days." + SIGN)}
    assert found == {"T1"}


def test_seed_set_yields_no_findings_beyond_the_listed_exceptions(checker, seeds):
    flagged: dict[str, list[str]] = {}
    for r in seeds:
        findings = checker.check(r.instruction, r.input, r.output, r.audience)
        if findings:
            flagged[r.meta["ref"]] = [f.rule_id for f in findings]
    assert flagged == SEED_EXCEPTIONS


# Realistic violations: one policy value in every seed that states it, swapped for a wrong one.
SEED_MUTATIONS = [
    ("R1", r"30-day", "45-day"),
    ("R3", r"5–10 business days", "2–3 business days"),
    ("R5", r"USD 500\b", "USD 1,000"),
    ("W1", r"2-year", "3-year"),
    ("T4", r"\s*Kind regards,.*\Z", ""),
]


@pytest.mark.parametrize(("rule_id", "pattern", "replacement"), SEED_MUTATIONS)
def test_wrong_values_swapped_into_seeds_are_found(checker, seeds, rule_id, pattern, replacement):
    found = total = 0
    for r in seeds:
        output, n = re.subn(pattern, replacement, r.output, flags=re.DOTALL)
        if n and r.meta["ref"] not in SEED_EXCEPTIONS:
            total += 1
            found += rule_id in {f.rule_id for f in checker.check(r.instruction, r.input, output, r.audience)}
    # Misses are numbers the input itself gives ("delivered 45 days ago") and sentences without a cue.
    assert total >= 30 and found / total >= 0.9, (found, total)


def test_a_case_must_forbid_stances_the_policy_defines():
    raw = _raw_policy()
    r7 = next(r for r in raw["rules"] if r["id"] == "R7")
    r7["cases"][0]["forbids"] = ["accept_exchange"]
    with pytest.raises(ValueError, match=r"R7\).cases\[0\]: stances \['accept_exchange'\] are not defined"):
        Policy.model_validate(raw)
