"""Refuse a config.json that would make Keras run, read or allocate what it should not.

Keras turns each `{"module", "class_name", "registered_name", "config"}` node of
config.json into a Python object: it looks the name up (registered custom
objects first, then Keras's public API, then the module's own namespace) and
instantiates the class or hands back the function. `safe_mode=True` stops
Python lambdas, not a node naming `keras.utils.get_file` as an activation, a
subclass of `TFSMLayer`, or a value marker whose dtype allocates gigabytes.

So every node is resolved here exactly as Keras would resolve it, without
importing or calling anything, and must land on one of Keras's own modeling
classes (layer, model, optimizer, loss, metric, initializer, regularizer,
constraint, dtype policy, learning-rate schedule), modeling functions
(activations, losses, metrics, ops) or the op classes a functional model records
when `keras.ops` run on its tensors (`x + y` is `keras.src.ops.numpy.Add`).
Anything else is refused, naming the node.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from gradhealth_server.errors import InvalidCheckpoint
from gradhealth_server.intake.limits import DEFAULT_LIMITS, Limits

# Layers that run arbitrary code or foreign runtimes; their subclasses too.
FORBIDDEN_CLASSES = frozenset(
    {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer", "__lambda__"}
)
# Keras's markers for plain values, deserialized without a class lookup.
VALUE_MARKERS = frozenset(
    {"__tuple__", "__numpy__", "__tensor__", "__bytes__", "__ellipsis__", "__slice__"}
)
# Markers whose `config.dtype` is handed to numpy/TensorFlow to build an array: a
# dtype such as "U500000000" makes a two-element list allocate 4 GB.
ARRAY_MARKERS = frozenset({"__numpy__", "__tensor__"})
ARRAY_DTYPES = frozenset(
    {"bool", "float16", "bfloat16", "float32", "float64", "complex64", "complex128", "string"}
    | {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}
)
# TensorFlow type specs Keras may write; `_deserialize` of anything else is arbitrary.
SAFE_TYPESPECS = frozenset({"TensorSpec", "RaggedTensorSpec", "SparseTensorSpec"})
# Keys that change how Keras deserializes; a checkpoint has no business setting them.
FORBIDDEN_KEYS = frozenset({"safe_mode", "custom_objects", "__passive_serialization__"})
# Keys whose string value Keras would open as a file (Keras itself writes lists here).
FILE_KEYS = frozenset({"vocabulary", "idf_weights"})
# Where Keras's modeling functions live ("keras.src.activations" itself also
# holds `deserialize` and `get`, which are not activations).
FUNCTION_MODULES = (
    "keras.src.activations.",
    "keras.src.losses.",
    "keras.src.metrics.",
    "keras.src.ops.numpy",
    "keras.src.ops.nn",
    "keras.src.ops.math",
    "keras.src.ops.image",
    "keras.src.ops.linalg",
)
# Where the op classes of a functional model live: `x + y` or `keras.ops.mean(x)` on a
# KerasTensor is recorded as a node of class `keras.src.ops.numpy.Add`, `...Mean`. Keras
# imports the node's module and takes the class; an op class is accepted only when it
# is an `Operation` defined in one of these modules (not merely imported into one).
OP_MODULES = frozenset(
    f"keras.src.ops.{name}" for name in ("numpy", "nn", "math", "image", "linalg", "core", "einops")
)
# Control-flow ops of keras.src.ops.core call Python functions they are given; a
# checkpoint has no business carrying one.
CALLABLE_OPS = frozenset(
    {"AssociativeScan", "Cond", "ForiLoop", "Map", "Scan", "Switch", "VectorizedMap", "WhileLoop"}
)
# `"module": "builtins"` functions are looked up in these Keras namespaces.
BUILTIN_NAMESPACES = (
    "activations",
    "constraints",
    "initializers",
    "losses",
    "metrics",
    "optimizers",
    "regularizers",
)
# Where Keras looks up a class named without a module (legacy layer lists).
CLASS_NAMESPACES = (
    "keras.layers",
    "keras",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.optimizers",
    "keras.optimizers.schedules",
    "keras.losses",
    "keras.metrics",
)
KIND_HINT = (
    "a Keras layer, model, optimizer, loss, metric, initializer, regularizer, "
    "constraint, dtype policy or learning-rate schedule"
)


def screen_config(config: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse any object outside Keras's own, before deserialization runs."""
    for node, where in _walk(config, "config"):
        for key in FORBIDDEN_KEYS & node.keys():
            raise InvalidCheckpoint(f"config sets {key!r} at {where}; refusing the checkpoint")
        for key in FILE_KEYS & node.keys():
            if isinstance(node[key], str):
                raise InvalidCheckpoint(
                    f"config names a file as {key!r} at {where} ({node[key][:80]!r}); "
                    "a checkpoint carries its vocabulary inside, not as a path on this server"
                )
        class_name = node.get("class_name")
        if isinstance(class_name, str):
            _screen_object(node, class_name, where, limits)


def _screen_object(node: dict[str, Any], class_name: str, where: str, limits: Limits) -> None:
    name = _object_name(node)
    if class_name in FORBIDDEN_CLASSES:
        raise InvalidCheckpoint(
            f"layer {name!r} is a {class_name}, which runs code from the checkpoint; "
            "gradhealth does not load Lambda, TFSMLayer, TorchModuleWrapper or JAX layers"
        )
    if class_name in VALUE_MARKERS:
        _screen_value(node, class_name, where)
        return
    if class_name == "__typespec__":
        _screen_typespec(node, where)
        return
    if class_name == "__keras_tensor__":
        return  # a symbolic tensor: shape and dtype, nothing to resolve
    module = node.get("module")
    registered = node.get("registered_name", class_name)  # Keras's own default
    is_function = class_name == "function"
    # A function node names its function in `config`; "function" is only its kind.
    member = str(node.get("config"))[:80] if is_function else class_name
    qualified = f"{module}.{member}" if module else member
    # Keras prefers a registered custom object over the module and class name.
    key = node.get("config") if is_function else registered
    custom = _registered(key) if isinstance(key, str) else None
    real = _real_name(custom) if custom is not None else None
    if _allowed(limits.allowed_classes, qualified, key, real):
        return
    # A function registered by a package Keras serializes as module "builtins",
    # config "package>name": outside Keras, wherever it is defined.
    custom_function = is_function and isinstance(key, str) and ">" in key
    foreign = module is not None and not _is_keras_module(module)
    if (
        custom is not None
        or custom_function
        or (foreign and not (is_function and module == "builtins"))
    ):
        raise InvalidCheckpoint(_outside_keras(name, where, is_function, qualified, key, real))
    expected = (
        (None, class_name, "function", node.get("config")) if is_function else (None, class_name)
    )
    if registered not in expected:
        raise InvalidCheckpoint(
            f"{name!r} at {where} is a {qualified!r} registered as {str(registered)[:80]!r}; "
            "Keras's own classes carry no other registered name"
        )
    if is_function:
        _screen_function(node, name, module, where)
    else:
        _check_class(_resolve_class(name, class_name, module, where), name, qualified)


def _allowed(allowed: frozenset[str], qualified: str, key: Any, real: str | None) -> bool:
    """On the operator's allow-list. A custom object registered in this process
    (its module imported for the allow-list) is what Keras will use, so its own
    module and name must be allowed, whatever module the config claims."""
    if isinstance(key, str) and key in allowed:
        return True
    if real is not None:
        return real in allowed
    return qualified in allowed


def _outside_keras(
    name: str, where: str, is_function: bool, qualified: str, key: Any, real: str | None
) -> str:
    """The refusal, naming the object and the exact flag that would allow it."""
    flag = "an operator can allow-list it (--allow-class {})"
    if not is_function:
        shown = real or qualified
        return f"{name!r} uses class {shown!r}, which is not part of Keras; " + flag.format(shown)
    if real is not None:
        return (
            f"{where.removeprefix('config.')} uses function {real!r} (registered as {key!r}), "
            "which is not part of Keras; " + flag.format(real)
        )
    if isinstance(key, str) and ">" in key:
        package, _, function = key.partition(">")
        return (
            f"{where.removeprefix('config.')} uses function {function!r}, registered with "
            f"Keras by package {package!r} outside Keras; "
            + flag.format(f"MODULE.{function}, MODULE being the module that defines it")
        )
    return f"{name!r} uses function {qualified!r}, which is not part of Keras; " + flag.format(
        qualified
    )


def _real_name(obj: Any) -> str:
    """module.name of a Python object, as `--allow-class` spells it."""
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', None) or type(obj).__name__}"


def _resolve_class(name: str, class_name: str, module: str | None, where: str) -> Any:
    """The class Keras would instantiate for this node, found without importing."""
    from keras.src.saving.serialization_lib import NON_MODELING_APIS

    if module is None:
        # Legacy layer lists carry no module: Keras finds the class by name.
        for space in CLASS_NAMESPACES:
            obj = _public(f"{space}.{class_name}")
            if obj is not None:
                return obj
        raise InvalidCheckpoint(
            f"{name!r} at {where} names class {class_name!r} without a module, "
            "and Keras has no such class"
        )
    api_name = f"{module}.{class_name}"
    if api_name in NON_MODELING_APIS:
        raise InvalidCheckpoint(f"{name!r} at {where} names {api_name!r}, not a modeling object")
    obj = _public(api_name)
    if obj is None:
        loaded = sys.modules.get(module)
        obj = vars(loaded).get(class_name) if loaded is not None else None
    if obj is None:
        raise InvalidCheckpoint(f"{name!r} at {where} names {api_name!r}, not a Keras class")
    return obj


def _check_class(obj: Any, name: str, qualified: str) -> None:
    if not isinstance(obj, type):
        what = "a function" if callable(obj) else f"a {type(obj).__name__}"
        raise InvalidCheckpoint(
            f"{name!r} names {qualified!r}, which is {what}, not {KIND_HINT}; refusing it"
        )
    forbidden = [base.__name__ for base in obj.__mro__ if base.__name__ in FORBIDDEN_CLASSES]
    if forbidden:
        raise InvalidCheckpoint(
            f"layer {name!r} is a {forbidden[0]} ({qualified!r}), which runs code from the "
            "checkpoint; gradhealth does not load Lambda, TFSMLayer, TorchModuleWrapper or "
            "JAX layers"
        )
    if _is_keras_op(obj):
        return
    if not issubclass(obj, _modeling_bases()):
        raise InvalidCheckpoint(f"{name!r} names {qualified!r}, which is not {KIND_HINT}")


def _is_keras_op(obj: type) -> bool:
    """An op class of Keras's own ops modules (Add, Mean, Relu, ...), not a control-flow op."""
    from keras.src.ops.operation import Operation

    return (
        issubclass(obj, Operation)
        and obj.__module__ in OP_MODULES
        and obj.__name__ not in CALLABLE_OPS
    )


def _screen_function(node: dict[str, Any], name: str, module: str | None, where: str) -> None:
    """Keras hands back the function uncalled, and the layer calls it on tensors:
    it must be an activation, loss, metric or op. With `"module": "builtins"`
    Keras takes the first hit among several namespaces, in no fixed order, so
    every hit must be one."""
    from keras.src.saving.serialization_lib import NON_MODELING_APIS

    fn_name = node.get("config")
    if not isinstance(fn_name, str) or module is None:
        raise InvalidCheckpoint(f"function at {where} has no name or no Keras module")
    if module == "builtins":
        candidates = [f"keras.{space}.{fn_name}" for space in BUILTIN_NAMESPACES]
    else:
        candidates = [f"{module}.{fn_name}"]
    found = [(api, _public(api)) for api in candidates]
    found = [(api, obj) for api, obj in found if obj is not None]
    safe = all(
        api not in NON_MODELING_APIS
        and not isinstance(obj, type)
        and str(getattr(obj, "__module__", "")).startswith(FUNCTION_MODULES)
        for api, obj in found
    )
    if not found or not safe:
        raise InvalidCheckpoint(
            f"{name!r} at {where} names function {fn_name!r} (module {module!r}), which is "
            "not a Keras activation, loss, metric or op; refusing it"
        )


def _screen_value(node: dict[str, Any], class_name: str, where: str) -> None:
    if class_name not in ARRAY_MARKERS:
        return
    inner = node.get("config")
    dtype = inner.get("dtype") if isinstance(inner, dict) else None
    if dtype not in ARRAY_DTYPES:
        raise InvalidCheckpoint(
            f"{class_name} value at {where} has dtype {str(dtype)[:40]!r}; "
            "a Keras config holds arrays of numbers, booleans or strings"
        )


def _screen_typespec(node: dict[str, Any], where: str) -> None:
    module = node.get("module")
    spec = node.get("spec_name")
    if not (
        isinstance(module, str) and module.startswith("tensorflow.") and spec in SAFE_TYPESPECS
    ):
        raise InvalidCheckpoint(
            f"type spec at {where} names {module}.{spec}; only TensorFlow tensor specs are allowed"
        )


def _registered(key: str) -> Any:
    from keras.src.saving import object_registration

    return object_registration.get_registered_object(key)


def _public(api_name: str) -> Any:
    from keras.src import api_export

    return api_export.get_symbol_from_name(api_name)


def _modeling_bases() -> tuple[type, ...]:
    import keras

    return (
        keras.layers.Layer,
        keras.optimizers.Optimizer,
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.initializers.Initializer,
        keras.regularizers.Regularizer,
        keras.constraints.Constraint,
        keras.DTypePolicy,
        keras.optimizers.schedules.LearningRateSchedule,
    )


def _walk(node: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    if isinstance(node, dict):
        yield node, where
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def _object_name(node: dict[str, Any]) -> str:
    cfg = node.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
        return cfg["name"]
    if isinstance(cfg, str):
        return cfg
    return str(node.get("class_name"))


def _is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))
