"""ConsoleError: a refusal with its HTTP status and a message for the admin."""
from __future__ import annotations

from typing import Any


class ConsoleError(Exception):
    """An answer other than success: HTTP status and a message for the admin."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra  # extra: more JSON fields
