"""The operator's allow-list of custom objects (`--allow-class mylib.Scale,...`).

A custom layer, loss or metric is code: config_screen refuses it unless named
here. Naming it also means its module is imported in every process that loads
checkpoints (embedded diagnose, each worker), so what the module registers with
`keras.saving.register_keras_serializable` deserializes; the module must be
installed where gradhealth runs, never shipped in a checkpoint.
"""

from __future__ import annotations


def parse_allow_list(text: str | None) -> frozenset[str]:
    """`--allow-class a.B,c.d` as a set of names."""
    return frozenset(name.strip() for name in (text or "").split(",") if name.strip())


def missing_allowed_module(allowed: frozenset[str]) -> str | None:
    """The first allow-listed module not installed here, as a one-line message. Found
    without importing it: the API process never imports TensorFlow, which it may."""
    import importlib.util

    for module in allowed_modules(allowed):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (
                f"--allow-class names module {module!r}, which is not installed here: install "
                "it where gradhealth serve runs (the server image)"
            )
    return None


def allowed_modules(allowed: frozenset[str]) -> list[str]:
    """The modules the allow-list names (`mylib.Scale` -> `mylib`): imported in every
    process that loads checkpoints, so what they register with Keras deserializes."""
    modules = {name.rpartition(".")[0] for name in allowed if ">" not in name}
    return sorted(m for m in modules if m)


def import_allowed(allowed: frozenset[str]) -> None:
    """Import each allow-listed module (the operator trusts it; it must be installed
    where the workers run). A missing one is a ValueError naming the flag."""
    import importlib

    for module in allowed_modules(allowed):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"--allow-class names module {module!r}, which cannot be imported here "
                f"({exc}): install it where gradhealth runs (the server image)"
            ) from exc
