"""Declarative marketing rules: which interest shifts trigger an action, and how often.

A rules file is TOML, one ``[[rule]]`` table per rule::

    [[rule]]
    name = "into-phones"              # required, unique: letters, digits, '-' and '_'
    to_categories = ["4145813"]       # the shift must gain one of these (omit: any category)
    from_categories = ["2355072"]     # ... and lose one of these (omit: any)
    min_confidence = 0.2              # calibrated confidence at least this (0: any, even unknown)
    cooldown_hours = 24               # at most one trigger of this rule per user in this much event time

A file with an unknown key, a wrong type, a duplicate name or no rule at all is refused
with a message that names the file, the rule and the problem.

>>> rules = parse_rules('[[rule]]\\nname = "any-shift"\\ncooldown_hours = 1\\n', "example.toml")
>>> shift = {"shift_id": "s1", "user_id": "u", "event_id": "e", "ts": 0, "model_version": "v",
...          "from_categories": [{"category_id": "a"}], "to_categories": [{"category_id": "b"}], "confidence": None}
>>> [t["rule"] for t in evaluate(rules, shift, fired={})], evaluate(rules, {**shift, "shift_id": "s2", "ts": 1000}, fired={"any-shift": 0})
(['any-shift'], [])
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRIGGER_NAMESPACE = uuid.UUID("8c1d7a52-3b0e-4f7a-9d6e-2a4b5c6d7e8f")
HOUR_MS = 3_600_000
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KEYS = {"name", "to_categories", "from_categories", "min_confidence", "cooldown_hours"}


class RuleError(ValueError):
    """A rules file that cannot be used."""


@dataclass(frozen=True)
class Rule:
    name: str
    to_categories: frozenset[str] | None = None
    from_categories: frozenset[str] | None = None
    min_confidence: float = 0.0
    cooldown_hours: float = 24.0

    def matches(self, shift: Mapping[str, Any]) -> list[str]:
        """The shift's ``to`` categories this rule accepts; empty when it does not match."""
        gained = [c["category_id"] for c in shift["to_categories"]]
        lost = {c["category_id"] for c in shift["from_categories"]}
        if self.from_categories is not None and not lost & self.from_categories:
            return []
        if self.min_confidence > 0 and (shift["confidence"] is None or shift["confidence"] < self.min_confidence):
            return []
        return [c for c in gained if self.to_categories is None or c in self.to_categories]


def load_rules(path: str | Path) -> tuple[Rule, ...]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise RuleError(f"{path}: cannot read the rules file: {error.strerror}") from error
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str) -> tuple[Rule, ...]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RuleError(f"{source}: not valid TOML: {error}") from error
    extra = set(document) - {"rule"}
    if extra:
        raise RuleError(f"{source}: unknown top-level keys {sorted(extra)}; rules go in [[rule]] tables")
    tables = document.get("rule")
    if not isinstance(tables, list) or not tables:
        raise RuleError(f"{source}: no [[rule]] tables")
    rules = [_rule(table, f"{source}: rule {i + 1}") for i, table in enumerate(tables)]
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleError(f"{source}: duplicate rule names {duplicates}")
    return tuple(rules)


def _rule(table: Mapping[str, Any], where: str) -> Rule:
    unknown = set(table) - KEYS
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise RuleError(f"{where}: 'name' must be 1-64 letters, digits, '-' or '_', got {name!r}")
    where = f"{where} ({name})"
    categories = {key: _categories(table.get(key), f"{where}: '{key}'") for key in ("to_categories", "from_categories")}
    confidence = table.get("min_confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise RuleError(f"{where}: 'min_confidence' must be a number from 0 to 1, got {confidence!r}")
    cooldown = table.get("cooldown_hours", 24.0)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown < 0:
        raise RuleError(f"{where}: 'cooldown_hours' must be a number >= 0, got {cooldown!r}")
    return Rule(name, categories["to_categories"], categories["from_categories"], float(confidence), float(cooldown))


def _categories(value: object, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise RuleError(f"{where} must be a non-empty list of category ids (strings), got {value!r}")
    return frozenset(value)


def trigger_id(rule: str, shift_id: str) -> str:
    """Idempotency key: a name-based UUID of the rule and the shift."""
    return str(uuid.uuid5(TRIGGER_NAMESPACE, json.dumps([rule, shift_id])))


def evaluate(rules: Sequence[Rule], shift: Mapping[str, Any], fired: dict[str, int]) -> list[dict[str, object]]:
    """The triggers one shift fires; ``fired`` (rule name -> event time of the user's last
    trigger, milliseconds) is the user's rate-limit state and is updated in place."""
    triggers = []
    for rule in rules:
        matched = rule.matches(shift)
        last = fired.get(rule.name)
        if not matched or (last is not None and shift["ts"] - last < rule.cooldown_hours * HOUR_MS):
            continue
        fired[rule.name] = int(shift["ts"])
        triggers.append(
            {
                "trigger_id": trigger_id(rule.name, str(shift["shift_id"])),
                "rule": rule.name,
                "user_id": shift["user_id"],
                "shift_id": shift["shift_id"],
                "event_id": shift["event_id"],
                "ts": shift["ts"],
                "to_categories": matched,
                "confidence": shift["confidence"],
                "model_version": shift["model_version"],
            }
        )
    return triggers
