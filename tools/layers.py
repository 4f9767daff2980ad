"""Check the import layers of DESIGN.md ("Layers"): `python -m tools.layers [--json]`.

Every import is read with `ast`, in functions and under `if TYPE_CHECKING:` too (a type import
from above is still an upward dependency); `importlib.import_module(name)` is not seen. Exit 1
on an import up the floors or across one floor (unless ALLOWED), or on a room or module cycle.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Floors, bottom to top, as DESIGN.md orders them: a room imports only from floors below. Rooms
# of one floor are peers, none builds on another, so none imports another unless ALLOWED says
# why. The top room holds `__init__.py` and top-level modules (`demo.py`): above every entry.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("config",),
    ("model",),
    ("parallel",),
    ("data", "checkpoint", "monitor", "inference", "cluster"),
    ("train",),
    ("cli",),
    ("app",),
)

# Same-floor arrows that are allowed, (importer, imported): reason. Empty on purpose: each
# entry is a decision, made with its reason, never a way to silence the checker.
ALLOWED: dict[tuple[str, str], str] = {
    ("inference", "data"): "eval scores the documents of prepared splits (data.iter_documents)",
}


@dataclass(frozen=True)
class Import:
    src: str  # importing module
    dst: str  # imported module
    file: str
    line: int
    typing: bool  # under `if TYPE_CHECKING:` only
    local: bool  # inside a function body


@dataclass
class Violation:
    kind: str  # "up", "same-floor", "room-cycle", "module-cycle", "unplaced"
    file: str
    line: int
    message: str
    typing: bool = False  # the import is under `if TYPE_CHECKING:`
    local: bool = False  # the import is inside a function


@dataclass
class Report:
    floors: dict[str, int]  # room -> floor (0 is the bottom)
    modules: dict[str, str]  # module -> room
    imports: list[Import]
    violations: list[Violation] = field(default_factory=list)

    def arrows(self) -> dict[tuple[str, str], int]:
        """(importer room, imported room) -> number of import sites."""
        pairs = [(self.modules[i.src], self.modules[i.dst]) for i in self.imports]
        return dict(sorted(Counter(p for p in pairs if p[0] != p[1]).items()))


class _Collector(ast.NodeVisitor):
    """(dotted names, line, typing, local) for every import statement, resolved to absolute."""

    def __init__(self, package: str) -> None:
        self.package = package  # the package a relative import starts from
        self.found: list[tuple[list[str], int, bool, bool]] = []
        self.typing = self.local = 0

    def visit_If(self, node: ast.If) -> None:  # `TYPE_CHECKING` or `typing.TYPE_CHECKING`
        guard = "TYPE_CHECKING" in (getattr(node.test, "id", 0), getattr(node.test, "attr", 0))
        self.typing += guard
        for stmt in node.body:
            self.visit(stmt)
        self.typing -= guard
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.local += 1
        self.generic_visit(node)
        self.local -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        base = getattr(node, "module", None) or ""
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) + 1 - node.level] + ([base] if base else []))
        # `from a import b` imports module a.b when b is one, else a name of a: see _resolve.
        names = [f"{base}.{a.name}" if base else a.name for a in node.names]
        self.found.append((names, node.lineno, self.typing > 0, self.local > 0))

    visit_ImportFrom = visit_Import


def _resolve(name: str, modules: Mapping[str, str]) -> str | None:
    """The longest prefix of `name` that is a module of the package, if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _sccs(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = [stack.pop()]
            while comp[-1] != v:
                comp.append(stack.pop())
            out.extend([sorted(comp)] if len(comp) > 1 else [])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """For every component, the shortest cycle through each of its nodes, without repeats."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    found: dict[frozenset[str], list[str]] = {}
    for comp in _sccs(graph):
        for start in comp:
            prev: dict[str, str] = {}
            queue = deque([start])
            while queue and start not in prev:
                v = queue.popleft()
                new = sorted(graph[v] & set(comp) - prev.keys())
                prev.update(dict.fromkeys(new, v))
                queue.extend(new)
            path = [start]
            while (p := prev[path[-1]]) != start:
                path.append(p)
            found.setdefault(frozenset(path), [start, *reversed(path[1:]), start])
    return list(found.values())


def check(
    root: Path,
    floors: Sequence[Sequence[str]] = FLOORS,
    allowed: Mapping[tuple[str, str], str] = ALLOWED,
) -> Report:
    """Read every module under the package directory `root` and check its imports."""
    root = root.resolve(strict=True)  # a mistyped --root fails rather than passes
    pkg, top = root.name, floors[-1][0]
    floor_of = {room: i for i, rooms in enumerate(floors) for room in rooms}
    files: dict[str, Path] = {}
    modules: dict[str, str] = {}  # a subpackage or a module named as a room is a room
    for path in sorted(root.rglob("*.py")):
        parts = [pkg, *path.relative_to(root).with_suffix("").parts]
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        in_room = len(parts) > 2 or (len(parts) == 2 and parts[1] in floor_of)
        files[mod], modules[mod] = path, parts[1] if in_room else top
    report = Report(floor_of, modules, [])
    for mod, path in files.items():
        rel = path.relative_to(root.parent).as_posix()
        collector = _Collector(mod if path.name == "__init__.py" else mod.rpartition(".")[0])
        collector.visit(ast.parse(path.read_text(), str(path)))
        for names, line, typing, local in collector.found:
            for dst in dict.fromkeys(d for n in names if (d := _resolve(n, modules))):
                if dst != mod:
                    report.imports.append(Import(mod, dst, rel, line, typing, local))
    where = {(i.src, i.dst): (i.file, i.line) for i in reversed(report.imports)}
    room_where = {(modules[a], modules[b]): w for (a, b), w in reversed(where.items())}
    room_where = {(a, b): w for (a, b), w in room_where.items() if a != b}
    add = report.violations.append
    for room in sorted(set(modules.values()) - set(floor_of)):
        add(Violation("unplaced", f"{pkg}/{room}", 0, f"room {room} is on no floor"))
    for imp in report.imports:
        a, b = modules[imp.src], modules[imp.dst]
        fa, fb = floor_of.get(a, -1), floor_of.get(b, -1)
        if a != b and min(fa, fb) >= 0 and (fa < fb or (fa == fb and (a, b) not in allowed)):
            arrow = f"{a} -> {b} ({imp.src} imports {imp.dst})"
            kind = "up" if fa < fb else "same-floor"
            add(Violation(kind, imp.file, imp.line, arrow, imp.typing, imp.local))
    mod_where = {(a, b): w for (a, b), w in where.items() if modules[a] == modules[b]}
    for kind, sites in (("room-cycle", room_where), ("module-cycle", mod_where)):
        for cyc in _cycles(sites):
            hops = [sites[h] for h in itertools.pairwise(cyc)]
            msg = " -> ".join(cyc) + "  [" + ", ".join(f"{f}:{n}" for f, n in hops) + "]"
            add(Violation(kind, *hops[0], msg))
    return report


def _print(report: Report, allowed: Mapping[tuple[str, str], str]) -> None:
    arrows = report.arrows()
    rooms = sorted(set(report.modules.values()), key=lambda r: (report.floors.get(r, -1), r))
    print(f"{'floor':<6}{'room':<12}{'modules':<9}imports from (import sites)")
    for room in rooms:
        outs = ", ".join(f"{b} ({n})" for (a, b), n in arrows.items() if a == room) or "-"
        n = sum(r == room for r in report.modules.values())
        print(f"{report.floors.get(room, '?')!s:<6}{room:<12}{n:<9}{outs}")
    print("\nallowed same-floor arrows:" + ("" if allowed else " none"))
    for (a, b), why in allowed.items():
        print(f"  {a} -> {b}: {why}")
    typed = [i for i in report.imports if i.typing]
    print(f"\nimports under TYPE_CHECKING only: {len(typed) or 'none'}")
    for i in typed:
        print(f"  {i.file}:{i.line}  {i.src} -> {i.dst}")
    print(f"\n{len(report.violations)} violation(s)")
    for v in report.violations:
        tag = ("  [TYPE_CHECKING]" if v.typing else "") + ("  [in a function]" if v.local else "")
        print(f"  {v.file}:{v.line}  {v.kind:<13}{v.message}{tag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.layers", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).parents[1] / "mbtrain")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    args = parser.parse_args(argv)
    report = check(args.root)
    if args.json:
        arrows = [{"from": a, "to": b, "sites": n} for (a, b), n in report.arrows().items()]
        allowed = [{"from": a, "to": b, "reason": r} for (a, b), r in ALLOWED.items()]
        print(json.dumps({**asdict(report), "arrows": arrows, "allowed": allowed}, indent=2))
    else:
        _print(report, ALLOWED)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
