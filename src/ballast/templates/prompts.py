"""How a record becomes chat messages. Training, evaluation and weak-model answering all use this one
function, so the strong model is trained and evaluated on exactly the same prompt format."""

from __future__ import annotations

from ballast.backends.base import Message
from ballast.records import Record

SYSTEM = (
    "You are the support assistant of {company}. You help support agents: you draft replies to "
    "customers, answer policy questions, summarise tickets and recommend next actions."
)


def user_content(instruction: str, input: str = "") -> str:
    return f"{instruction.strip()}\n\n{input.strip()}" if input.strip() else instruction.strip()


def record_messages(record: Record, company: str, *, with_response: bool) -> list[Message]:
    """System + user turn for a record; with_response adds the record's output as the assistant turn."""
    messages = [
        {"role": "system", "content": SYSTEM.format(company=company)},
        {"role": "user", "content": user_content(record.instruction, record.input)},
    ]
    if with_response:
        messages.append({"role": "assistant", "content": record.output})
    return messages
