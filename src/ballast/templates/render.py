"""Filling `{slot}` placeholders in prompt templates, with an error that names the template and the slot.

Only `{name}` is a placeholder; other braces (JSON in an example, a stray `{`) are left as written, so a
template file never needs escaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ballast.errors import InputError
from ballast.templates import Template

SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingSlot(InputError):
    def __init__(self, template_id: str, slot: str, given: list[str]) -> None:
        self.template_id, self.slot = template_id, slot
        super().__init__(
            f"template {template_id!r} needs slot {slot!r}, which has no value "
            f"(given: {', '.join(sorted(given)) or 'none'})",
            field=slot,
        )


def slots_of(text: str) -> list[str]:
    return list(dict.fromkeys(SLOT.findall(text)))


def fill(template_id: str, text: str, values: Mapping[str, object]) -> str:
    def value(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise MissingSlot(template_id, m.group(1), list(values))
        return str(values[m.group(1)])

    return SLOT.sub(value, text)


def render(template: Template, **values: object) -> str:
    return fill(template.id, template.text, values)
