"""The house's rules, read from the code itself (AST): one-way imports, no private reach, small rooms.

The layer order is documented in docs/CONTRACTS.md ("The layers"); a package may import only from
its own layer or below. Imports inside functions and under ``TYPE_CHECKING`` count as imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Low to high. A module may import its own package and anything on a lower line.
ENGINE_LAYERS: list[tuple[str, ...]] = [
    ("engine.errors", "engine.version"),
    ("engine.config",),
    ("engine.spec",),
    ("engine.media",),
    ("engine.models",),
    ("engine.method",),
    ("engine.jobs", "engine.jobs.quota"),  # quota: GPU time per person per day, and the lanes
    ("engine.workers",),
    ("engine.fleet",),
    ("engine.queue",),
    ("engine.cli",),
    ("engine", "engine.__main__"),  # the package's face: the public API, and `python -m engine`
]
BOT_LAYERS: list[tuple[str, ...]] = [
    ("bot.wordfilter", "bot.refusals"),  # pure: banned-word matching, refusal counts
    ("bot.config", "bot.limits", "bot.origin", "bot.images", "bot.timelapse", "bot.views", "bot.suggestions",
     "bot.metrics"),
    ("bot.endpoints", "bot.roles", "bot.replies", "bot.health", "bot.texts"),
    ("bot.cdn", "bot.access", "bot.modlog"),
    ("bot.uploads", "bot.inputs", "bot.pending", "bot.moderation"),
    ("bot.editing", "bot.personal"),
    ("bot.delivery",),
    ("bot.web",),  # the web server: /healthz, /metrics, the gallery
    ("bot.app",),
    ("bot.submit",),  # what commands and gestures share: post the status, submit, answer
    ("bot.cogs",),
    ("bot", "bot.__main__"),
]
MAX_TOP_LEVEL_ENGINE_MODULES = 8
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("engine", "bot"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, int, list[str]]]:
    """(module imported, line, names taken from it) for every import in the module, wherever it stands."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                pkg = name.split(".") if _is_package(name) else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [a.name for a in node.names]
            # `from engine.cli import bench` imports the module engine.cli.bench
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            rest = [n for n in names if f"{base}.{n}" not in MODULES]
            out += [(s, node.lineno, []) for s in subs]
            if rest or not subs:
                out.append((base, node.lineno, rest))
    return [(m, line, names) for m, line, names in out if m.split(".")[0] in ("engine", "bot")]


def _target(imported: str) -> str | None:
    """The module of ours an import names (the longest known prefix)."""
    parts = imported.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name in MODULES:
        for imported, _, _ in _imports(name):
            target = _target(imported)
            if target and target != name:
                graph[name].add(target)
    return graph


def _layer(name: str, layers: list[tuple[str, ...]]) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer) of the most specific entry
    for i, entries in enumerate(layers):
        for entry in entries:
            if name == entry or name.startswith(entry + "."):
                if best is None or len(entry) > best[0]:
                    best = (len(entry), i)
    return None if best is None else best[1]


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize(("top", "layers"), [("engine", ENGINE_LAYERS), ("bot", BOT_LAYERS)])
def test_imports_run_one_way_down_the_layers(top: str, layers: list[tuple[str, ...]]) -> None:
    unplaced = [m for m in MODULES if m.split(".")[0] == top and _layer(m, layers) is None]
    assert unplaced == [], f"modules in no layer (add them to the order in docs/CONTRACTS.md): {unplaced}"
    wrong = []
    for name in MODULES:
        if name.split(".")[0] != top:
            continue
        for imported, line, names in _imports(name):
            target = _target(imported)
            if target is None or target.split(".")[0] != top or target == name:
                continue
            if target == top and name != top:  # the face: only its __version__ may be taken from below
                if not all(n.startswith("__") for n in names):
                    wrong.append(f"{name}:{line} imports the package face {target!r} (import the module itself)")
                continue
            if _layer(target, layers) > _layer(name, layers):  # type: ignore[operator]
                wrong.append(f"{name}:{line} -> {target}")
    assert wrong == [], "imports against the layer order:\n" + "\n".join(wrong)


def test_the_bot_uses_the_engine_through_its_public_face() -> None:
    """``from engine import X``: the bot, like any embedder, never depends on where an engine module lives."""
    wrong = [f"{name}:{line} imports {imported}" for name in MODULES if name.split(".")[0] == "bot"
             for imported, line, _ in _imports(name) if imported.startswith("engine.")]
    assert wrong == []


def test_no_module_takes_another_modules_private_names() -> None:
    wrong = [f"{name}:{line} takes {n} from {imported}" for name in MODULES
             for imported, line, names in _imports(name) for n in names
             if n.startswith("_") and not n.startswith("__") and _target(imported) != name]
    assert wrong == []


def _private_members() -> dict[str, set[str]]:
    """Each module's classes' private members: ``def _x`` in a class body, ``self._x = ...``."""
    out: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("_"):
                    out[name].add(node.name)
                elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                      and isinstance(node.value, ast.Name) and node.value.id == "self"):
                    out[name].add(node.attr)
    return {m: {n for n in names if n.startswith("_") and not n.startswith("__")} for m, names in out.items()}


def test_no_object_reaches_into_another_modules_private_members() -> None:
    """``x._name`` only on ``self``/``cls``: a class's private members are its own module's business
    (the private names of other libraries, such as the unpickler's torch internals, are not ours)."""
    members = _private_members()
    wrong = []
    for name, path in MODULES.items():
        theirs = set().union(*(v for m, v in members.items() if m != name)) - members.get(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in theirs
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                wrong.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert wrong == []


def test_rooms_stay_small() -> None:
    top = [m for m, p in MODULES.items() if m.count(".") == 1 and m.startswith("engine.")
           and p.name not in ("__init__.py", "__main__.py") and not _is_package(m)]
    assert len(top) <= MAX_TOP_LEVEL_ENGINE_MODULES, f"engine/ top-level modules: {top}"
    big = []
    for name, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []


def test_the_package_face_lists_each_public_name_once_and_each_resolves() -> None:
    """``from engine import X`` (the names embedders use) matches what type checkers see, and costs no torch."""
    import subprocess
    import sys

    tree = ast.parse((ROOT / "engine" / "__init__.py").read_text())
    typed: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                typed.update({a.asname or a.name: (imp.module, a.name) for a in imp.names})
    import engine

    assert typed == engine.PUBLIC
    missing = [n for n in engine.PUBLIC if getattr(engine, n, None) is None]
    assert missing == []
    code = "import sys, engine\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", "import engine must not import torch"
