"""The shape of the code, enforced: one direction between the packages, the
server's stages layered along the data path, no import cycles, small modules.
docs/architecture.md explains each rule."""

from __future__ import annotations

import ast
import itertools
import subprocess
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "gradhealth": REPO / "client" / "gradhealth",
    "gradhealth_server": REPO / "server" / "gradhealth_server",
}
GENERATED = ("client/gradhealth/v1/", "/migrations/versions/")
# What the server may import of the client package: the wire contract.
CONTRACT = ("gradhealth.v1", "gradhealth.contract")
# Tools that drive the service as its users do (the demo) may use the public client.
PUBLIC_CLIENT = (
    "gradhealth.client",
    "gradhealth.callback",
    "gradhealth.render",
    "gradhealth.verdicts",
    "gradhealth.cli.options",
)
# The server's stages, lowest first: a stage imports only stages before it.
LAYERS = (
    "errors",
    "intake",
    "engine",
    "verdict",
    "rules",
    "diagnosis",
    "store",
    "metrics",
    "service",
    "commands",
)
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for _package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            if any(part in path.as_posix() for part in GENERATED):
                continue
            parts = path.relative_to(root.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (also inside functions), except
    under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports(path) if target in known and target != name}
        for name, path in known.items()
    }


def stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_the_client_never_imports_the_server():
    wrong = {
        (source, target)
        for source, targets in graph().items()
        if source.startswith("gradhealth.")
        for target in targets
        if target.startswith("gradhealth_server")
    }
    assert not wrong


def test_the_server_imports_only_the_contract_of_the_client():
    wrong = set()
    for source, targets in graph().items():
        if not source.startswith("gradhealth_server"):
            continue
        allowed = CONTRACT + (PUBLIC_CLIENT if stage(source) == "commands" else ())
        for target in targets:
            if target.split(".")[0] == "gradhealth" and not target.startswith(allowed):
                wrong.add((source, target))
    assert not wrong


def test_the_server_stages_import_only_earlier_stages():
    order = {name: i for i, name in enumerate(LAYERS)}
    wrong = set()
    for source, targets in graph().items():
        if not source.startswith("gradhealth_server.") or stage(source) not in order:
            continue
        for target in targets:
            inner = target.startswith("gradhealth_server.") and stage(target) in order
            if inner and order[stage(target)] > order[stage(source)]:
                wrong.add((source, target))
    assert not wrong
    # Every stage folder is in the order (a new one must be placed).
    folders = {p.name for p in PACKAGES["gradhealth_server"].iterdir() if p.is_dir()}
    assert folders - {"__pycache__"} <= set(LAYERS), folders - set(LAYERS)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (a package importing its own submodule is not one)."""
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)

    def nested(a: str, b: str) -> bool:
        return a.startswith(b) or b.startswith(a)

    return [c for c in found if not all(nested(a, b) for a, b in itertools.pairwise(c))]


def test_no_import_cycles():
    assert cycles(graph()) == []
    # The search finds one where there is one.
    ring = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}
    assert cycles(ring) == [["p.a", "p.b", "p.c", "p.a"]]


def test_the_checker_sees_what_it_checks():
    """The rules above could pass on an empty graph: they cannot."""
    edges = graph()
    assert "gradhealth_server.engine.quantities.activations" in edges
    assert "gradhealth_server.engine.measurements" in edges["gradhealth_server.rules.base"]
    assert "gradhealth.contract" in edges["gradhealth_server.service.api"]


def test_no_module_is_over_400_lines():
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    long = {
        name: n
        for name in tracked
        if not name.startswith("tests/") and not any(part in name for part in GENERATED)
        if (n := len((REPO / name).read_text().splitlines())) > MAX_LINES
    }
    assert not long
