"""The layout stays a pipeline: no import cycle, no stage importing another stage, shared ground importing no
stage, and only the top (cli, pipeline, pool_build) importing stages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("generate", "curate", "score", "select", "train", "evaluate", "report")
TOP = ("ballast.cli", "ballast.pipeline", "ballast.pool_build")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "ballast").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(runtime_only: bool) -> dict[str, set[str]]:
    """Module -> the ballast modules it imports (at the top or inside functions); with `runtime_only`, imports
    under `if TYPE_CHECKING:` (for annotations) are left out."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name if name and name != "ballast" else None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        if runtime_only:
            for node in ast.walk(tree):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    skip.update(id(n) for b in node.body for n in ast.walk(b))
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in map(resolve, (t for t in targets if t.startswith("ballast"))) if t and t != name}
        graph[name] = edges
    return graph


def _stage(module: str) -> str | None:
    part = module.split(".")[1] if "." in module else ""
    return part if part in STAGES else None


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    memo: dict[str, list[str]] = {}

    def chain(m: str) -> list[str]:
        if m not in memo:
            memo[m] = [m] + max((chain(n) for n in graph[m]), key=len, default=[])
        return memo[m]

    return max((chain(m) for m in graph), key=len)


def test_no_import_cycle():
    graph = import_graph(runtime_only=True)
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [m, n])}"
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert len(longest_chain(graph)) <= 8, longest_chain(graph)


def test_no_stage_imports_another_and_no_upward_import():
    for module, targets in import_graph(runtime_only=False).items():
        own = _stage(module)
        for target in targets:
            theirs = _stage(target)
            if module in TOP:
                continue
            assert target not in TOP, f"{module} imports {target}, which sits above it"
            if theirs is not None:
                assert theirs == own, f"{module} ({own or 'shared ground'}) imports {target} (stage {theirs})"


def test_python_m_ballast_cli_knows_every_command():
    import subprocess
    import sys

    from ballast.cli import app

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    out = subprocess.run(
        [sys.executable, "-m", "ballast.cli", "--help"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "COLUMNS": "200"},
        check=True,
    ).stdout
    missing = [n for n in names if f" {n} " not in out]
    assert not missing, missing
