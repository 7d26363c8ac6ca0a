"""Prompt templates are versioned files: every record names the template id and sha256 that made it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).parent


@dataclass(frozen=True)
class Template:
    id: str  # path below templates/ without the suffix, e.g. "generate/self_instruct"
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@cache
def load_template(template_id: str) -> Template:
    path = ROOT / f"{template_id}.txt"
    if not path.is_file():
        known = sorted(str(p.relative_to(ROOT).with_suffix("")) for p in ROOT.rglob("*.txt"))
        raise KeyError(f"no template {template_id!r}; known: {known}")
    return Template(template_id, path.read_text(encoding="utf-8"))
