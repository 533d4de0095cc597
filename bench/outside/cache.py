"""Where the outside runs live: one directory per run, `<runs>/<name>/` with `model.keras`,
`batch.npz` (x or x_<input>, y), `meta.json` (label, twin, accept, note, holdout metric)
and, once `python -m bench.outside.runs diagnose` has run, `verdict.json`.

The runs directory is `.cache/outside/v<VERSION>` under the repository unless
GRADHEALTH_OUTSIDE_RUNS names another (the red-teamer's own copy, say). Bump VERSION
whenever a change to a run's code changes what the run is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

VERSION = "1"
ROOT = Path(__file__).resolve().parents[2] / ".cache" / "outside"
ENV = "GRADHEALTH_OUTSIDE_RUNS"


def runs_dir() -> Path:
    override = os.environ.get(ENV)
    return Path(override) if override else ROOT / f"v{VERSION}"


def run_dir(name: str) -> Path:
    return runs_dir() / name


def gradhealth_command() -> list[str]:
    """The gradhealth CLI of this interpreter: the script installed next to it, or the module."""
    script = Path(sys.executable).with_name("gradhealth")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gradhealth.cli"]
