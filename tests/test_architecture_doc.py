"""docs/architecture.md is the map of the code: every module of icdedit/ is on it, and nothing
on it is gone. Modules stay short enough to read whole."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "icdedit"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 500


OTHER_FOLDERS = ("tests/", "benchmarks/")  # files the doc names outside the package


def modules() -> list[str]:
    """Every module of icdedit/ by its path from the repository (`icdedit/workflow.py`,
    `icdedit/cli/app.py`), package markers (__init__.py, __main__.py) left out."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )


def named_in_doc(text: str) -> set[str]:
    """The files the doc names, by their path from the repository: `workflow.py` and
    `cli/app.py` in backticks are the package's (so is `icdedit/tiny.py`), `tests/...` and
    `benchmarks/...` are those folders'; a dotted `icdedit.engine` is the module
    icdedit/engine.py (or a package, icdedit/p2p/__init__.py)."""
    names = set()
    for name in re.findall(r"`((?:[\w.-]+/)*\w+\.py)`", text):
        names.add(name if name.startswith(OTHER_FOLDERS) else "icdedit/" + name.removeprefix("icdedit/"))
    for dotted in re.findall(r"`icdedit\.(\w+(?:\.\w+)*)`", text):
        names.add("icdedit/" + dotted.replace(".", "/") + ".py")
    return names


def exists(name: str) -> bool:
    """A file the doc names is there: the file itself, or for a dotted package name its __init__.py."""
    path = ROOT / name
    return path.is_file() or (path.with_suffix("") / "__init__.py").is_file()


def test_the_doc_is_read_as_meant():
    text = "`workflow.py`, `cli/app.py`, `icdedit/tiny.py`, `tests/reference.py`, `icdedit.p2p`; plain.py"
    assert named_in_doc(text) == {
        "icdedit/workflow.py",
        "icdedit/cli/app.py",
        "icdedit/tiny.py",
        "tests/reference.py",
        "icdedit/p2p.py",
    }
    assert all(exists(name) for name in named_in_doc(text)) and not exists("icdedit/gone.py")
    assert {"icdedit/tiny.py", "icdedit/cli/app.py"} <= set(modules())
    assert not any(module.endswith(("__init__.py", "__main__.py")) for module in modules())


def test_every_module_is_on_the_map():
    missing = [module for module in modules() if module not in named_in_doc(DOC.read_text())]
    assert not missing, f"docs/architecture.md does not mention {missing}"


def test_every_file_on_the_map_exists():
    gone = sorted(name for name in named_in_doc(DOC.read_text()) if not exists(name))
    assert not gone, f"docs/architecture.md names files that do not exist: {gone}"


def test_no_module_is_over_500_lines():
    lengths = {module: len((ROOT / module).read_text().splitlines()) for module in modules()}
    long = {module: n for module, n in lengths.items() if n > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
