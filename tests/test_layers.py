"""tools/layers.py: the layer checker on tiny synthetic packages, then on mbtrain itself."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

from tools.layers import Violation, check, main

REPO = Path(__file__).resolve().parents[1]

# A small house: base below two peers, then top, then the app room (the package's own modules).
FLOORS = (("base",), ("left", "right"), ("top",), ("app",))


def write_package(root: Path, files: dict[str, str]) -> Path:
    """`pkg/` under `root` with every subpackage's `__init__.py` and the given modules."""
    pkg = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        for parent in [path.parent, *path.parent.parents]:
            if parent == root:
                break
            parent.mkdir(parents=True, exist_ok=True)
            (parent / "__init__.py").touch()
        path.write_text(dedent(text))
    return pkg


def kinds(violations: list[Violation]) -> list[tuple[str, str, int]]:
    return [(v.kind, v.file, v.line) for v in violations]


def test_clean_package_has_no_violations(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "base/core.py": "import os\nX = 1\n",
            "left/a.py": "from ..base.core import X\nfrom . import b\n",
            "left/b.py": "import pkg.base.core\n",
            "right/c.py": "from pkg.base import core\n",
            "top/t.py": "from pkg.left import a\nfrom pkg.right.c import core\n",
            "demo.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.top import t\n",
        },
    )
    report = check(pkg, FLOORS, {})
    assert report.violations == []
    assert report.modules["pkg.demo"] == "app" and report.modules["pkg"] == "app"
    assert report.arrows() == {
        ("app", "top"): 1,
        ("left", "base"): 2,
        ("right", "base"): 1,
        ("top", "left"): 1,
        ("top", "right"): 1,
    }


def test_upward_import_is_found_in_functions_and_under_type_checking(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "base/core.py": """\
                import typing

                if typing.TYPE_CHECKING:
                    from pkg.left.a import A

                def f():
                    from ..top import t
                """,
            "left/a.py": "A = 1\n",
            "top/t.py": "",
        },
    )
    violations = check(pkg, FLOORS, {}).violations
    assert kinds(violations) == [("up", "pkg/base/core.py", 4), ("up", "pkg/base/core.py", 7)]
    assert [(v.typing, v.local) for v in violations] == [(True, False), (False, True)]


def test_same_floor_import_is_found_unless_allowed(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {"left/a.py": "from ..right import b\n", "right/b.py": ""})
    assert kinds(check(pkg, FLOORS, {}).violations) == [("same-floor", "pkg/left/a.py", 1)]
    assert check(pkg, FLOORS, {("left", "right"): "a reason"}).violations == []
    # The table names one direction: the other stays a violation.
    assert check(pkg, FLOORS, {("right", "left"): "a reason"}).violations != []


def test_room_cycle_is_found_even_when_each_arrow_is_allowed(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path, {"left/a.py": "from pkg.right import b\n", "right/b.py": "import pkg.left.a\n"}
    )
    allowed = {("left", "right"): "r1", ("right", "left"): "r2"}
    violations = check(pkg, FLOORS, allowed).violations
    assert kinds(violations) == [("room-cycle", "pkg/left/a.py", 1)]
    assert violations[0].message.startswith("left -> right -> left")
    assert "pkg/right/b.py:1" in violations[0].message


def test_module_cycle_inside_one_room_is_found(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "base/a.py": "from . import b\n",
            "base/b.py": "def f():\n    from pkg.base.a import g\n",
            "base/c.py": "from pkg.base import a\n",
        },
    )
    violations = check(pkg, FLOORS, {}).violations
    assert kinds(violations) == [("module-cycle", "pkg/base/a.py", 1)]
    assert violations[0].message.startswith("pkg.base.a -> pkg.base.b -> pkg.base.a")


def test_room_on_no_floor_is_reported(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {"attic/x.py": "", "base/core.py": ""})
    assert [v.kind for v in check(pkg, FLOORS, {}).violations] == ["unplaced"]


def test_cli_exit_code_and_json(tmp_path: Path, capsys) -> None:
    pkg = write_package(tmp_path, {"base/core.py": "from pkg.top import t\n", "top/t.py": ""})
    # The default floors do not know these rooms: only the JSON shape and exit code are checked.
    assert main(["--root", str(pkg), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {"floors", "modules", "imports", "arrows", "allowed", "violations"} <= report.keys()
    clean = write_package(tmp_path / "clean", {"errors.py": "", "config/load.py": ""})
    assert main(["--root", str(clean)]) == 0


def test_mbtrain_layers_are_clean() -> None:
    violations = check(REPO / "mbtrain").violations
    listing = "\n".join(f"{v.file}:{v.line} {v.kind} {v.message}" for v in violations)
    assert violations == [], f"{len(violations)} layer violation(s):\n{listing}"


def test_no_module_of_the_package_over_400_lines():
    """Small, named modules (docs/architecture.md): a file past 400 lines is split by what it
    does, not left to grow."""
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted((REPO / "mbtrain").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long
