"""ConsoleError: a refusal with its HTTP status and a message for the admin."""
from __future__ import annotations

from typing import Any


class ConsoleError(Exception):
    """An answer other than success: HTTP status and a message for the admin."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra  # extra: more JSON fields


def shown(value: object, limit: int = 40) -> str:
    """A value as a message quotes it (repr), cut to about ``limit`` characters: a parameter of
    thousands of characters is not echoed back whole."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")
