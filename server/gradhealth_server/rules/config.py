"""Threshold overrides: their checks and their error, shared by the rules and
the context they read."""

from __future__ import annotations

from typing import Any

from gradhealth_server.errors import GradhealthError


class ConfigError(GradhealthError):
    """A rule threshold override names no threshold or has the wrong type."""


def checked(thresholds: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with the type of each default (ints may stand for floats)."""
    defaults = thresholds()
    out = {}
    for name, value in overrides.items():
        default = getattr(defaults, name)
        ok = isinstance(value, type(default)) or (
            isinstance(default, float) and isinstance(value, int)
        )
        if not ok or isinstance(value, bool):
            raise ConfigError(f"threshold {name} must be a {type(default).__name__}, got {value!r}")
        out[name] = float(value) if isinstance(default, float) else value
    return out
