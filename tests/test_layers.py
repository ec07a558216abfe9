"""The package's layers: no module imports from a layer above its own, and no import circle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cmpt_lightning"

#: The layers, bottom up (README, "How the code is laid out"); a module belongs to the first
#: entry its dotted name starts with.
LAYERS = [
    ("choices", "tasks", "errors", "notices"),
    ("models",),
    (
        "missing",
        "missing_plan",
        "mask_files",
        "mask_import",
        "mechanisms",
        "corruptions",
        "evaluation",
        "losses",
        "metrics",
        "thresholds",
        "diagnostics",
        "schedules",
    ),
    ("datasets",),
    ("datamodules",),
    ("module", "checkpoint_state", "corruption_pass"),
    ("callbacks", "checkpoints", "checkpoint_io"),
    ("cli", "cli_errors", "cli_legacy", "cli_help", "cli_suggest", "help_text"),
    (
        "sweep",
        "study",
        "study_stats",
        "study_results",
        "study_tables",
        "datacheck",
        "cache_command",
        "masks_command",
    ),
    ("main", "__main__", "__init__"),
]


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(name: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    msg = f"module {name!r} is in no layer; add it to LAYERS and the README"
    raise AssertionError(msg)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (relative and absolute imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("cmpt_lightning"):
                target = node.module.removeprefix("cmpt_lightning").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                found.add(full if full in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cmpt_lightning."):
                    found.add(alias.name.removeprefix("cmpt_lightning."))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, deps in _graph().items()
        if name != "__init__"
        for dep in deps
        if _layer(dep) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                circles.append(" -> ".join([*trail[trail.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)
