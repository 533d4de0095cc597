"""The tiny base class every rule implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.verdict import Cause, Finding


class Rule(ABC):
    """One cause, one place: `check` returns the findings for that cause."""

    cause: ClassVar[Cause]

    @abstractmethod
    def check(self, m: Measurements) -> list[Finding]:
        """Findings for this rule's cause; an empty list when it does not apply."""
