"""Naming a registered model version: `NAME@ALIAS` (whatever the alias points at when it is looked up) or
`NAME:VERSION` (one version, fixed). The one parser of both."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import BadInputError

_REF = re.compile(r"^(?P<name>[^@:\s]+)(?:@(?P<alias>[A-Za-z0-9_.-]+)|:(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None
    version: int | None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`NAME@ALIAS` or `NAME:VERSION`; anything else is bad usage."""
        match = _REF.match(text.strip())
        if match is None:
            raise BadInputError(f"'{text}' is not NAME@ALIAS or NAME:VERSION (for example support-tickets@champion)")
        version = match.group("version")
        return cls(match.group("name"), match.group("alias"), int(version) if version else None)

    @classmethod
    def parse_version(cls, text: str) -> tuple[str, int]:
        """`NAME:VERSION` alone (commands that act on one version: an alias would move under them)."""
        ref = cls.parse(text) if ":" in text else None
        if ref is None or ref.version is None:
            raise BadInputError(f"'{text}' is not NAME:VERSION (for example support-tickets:3)")
        return ref.name, ref.version

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}:{self.version}"
