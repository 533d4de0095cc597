"""The tiny base class every rule implements, and its configurable thresholds."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.config import ConfigError, checked
from gradhealth_server.rules.context import Context
from gradhealth_server.verdict.findings import Cause, RuleFinding


@dataclasses.dataclass(frozen=True)
class NoThresholds:
    pass


class Rule(ABC):
    """One cause, one place: `check` returns the findings for that cause.

    Each rule declares its thresholds as a frozen dataclass (with the anchor each
    default comes from); an operator overrides them by name.
    """

    cause: ClassVar[Cause]
    Thresholds: ClassVar[type] = NoThresholds
    # Why no remedy trial backs this rule's alarms, for the findings that carry no
    # measured trial of their own (every warning or critical says one or the other).
    no_trial: ClassVar[str] = ""

    def __init__(self, **overrides: Any) -> None:
        names = {f.name for f in dataclasses.fields(self.Thresholds)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(
                f"rule {self.cause} has no threshold {', '.join(sorted(unknown))}; "
                f"it has {', '.join(sorted(names)) or 'none'}"
            )
        self.t = dataclasses.replace(self.Thresholds(), **checked(self.Thresholds, overrides))

    @abstractmethod
    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        """Findings for this rule's cause; an empty list when it does not apply."""
