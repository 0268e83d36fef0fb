"""Write docs/architecture.md: every module, its one topic, its size and what it imports.

    python docs/make_architecture.py            # writes docs/architecture.md
    python docs/make_architecture.py --print SRC  # prints the map of SRC, with line counts

The topic is the first line of the module's docstring (each module has one topic, named
there); the imports are read from the source (``ast``), so the page shows the code as it
is.  A test checks the page is current.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "src" / "napari_kmeans_filter"
#: The shells; every other module is the core, which imports none of them.
SHELLS = {
    "cli": "command line",
    "_napari": "napari plugin",
}
#: The package's entry points: what ``import napari_kmeans_filter`` and ``python -m`` run.
ENTRY_POINTS = {"__init__", "__main__"}
#: Written by the build (the version), not by hand.
GENERATED = {"_version.py"}


def modules(package: Path) -> dict[str, dict]:
    """``{dotted name: {"topic", "lines", "imports"}}`` of every module of ``package``."""
    found = {}
    top = package.name
    for path in sorted(package.rglob("*.py")):
        if path.name in GENERATED:
            continue
        relative = path.relative_to(package).with_suffix("")
        parts = list(relative.parts)
        is_init = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_init else parts) or "__init__"
        here = parts[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree) or ""
        imports = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                module = node.module or ""
                if module == top or module.startswith(top + "."):
                    inner = module[len(top) + 1 :]
                    if inner:
                        imports.add(inner)
                    else:
                        imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                imports.update(
                    alias.name[len(top) + 1 :]
                    for alias in node.names
                    if alias.name.startswith(top + ".")
                )
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - (node.level - 1)]
                if node.module:
                    imports.add(".".join([*base, node.module]))
                else:
                    imports.update(".".join([*base, alias.name]) for alias in node.names)
        found[name] = {
            "topic": doc.strip().splitlines()[0] if doc.strip() else "(no docstring)",
            "lines": len(path.read_text(encoding="utf-8").splitlines()),
            "imports": imports,
        }
    names = set(found)
    for info in found.values():
        resolved = set()
        for target in info["imports"]:
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target:
                resolved.add(target)
        info["imports"] = resolved
    return found


def _group(name: str) -> str:
    if name in ENTRY_POINTS:
        return "entry points"
    return SHELLS.get(name.split(".")[0], "core")


def _order(found: dict) -> list[str]:
    """Core modules in import order (what a module imports comes first), then each shell."""
    done: list[str] = []

    def visit(name, seen=()):
        if name in done or name in seen:
            return
        for target in sorted(found[name]["imports"]):
            if _group(target) == _group(name) and target != name:
                visit(target, (*seen, name))
        done.append(name)

    for name in sorted(found):
        visit(name)
    groups = ["core", *SHELLS.values(), "entry points"]
    return sorted(done, key=lambda name: groups.index(_group(name)))


def table(found: dict, *, lines: bool = False) -> str:
    """The map as a markdown table; ``lines`` adds each module's line count (left out of
    the committed page, which would otherwise change with every edit)."""
    head = "| module | topic |" + (" lines |" if lines else "") + " imports (package modules) |"
    rows = [head, "|---|---|" + ("---|" if lines else "") + "---|"]
    for name in _order(found):
        info = found[name]
        imports = ", ".join(f"`{t}`" for t in sorted(info["imports"]) if t != name)
        size = f" {info['lines']} |" if lines else ""
        rows.append(f"| `{name}` | {info['topic']} |{size} {imports} |")
    return "\n".join(rows)


def render() -> str:
    found = modules(PACKAGE)
    return f"""# Architecture: one core, thin shells

<!-- Written by docs/make_architecture.py from the source; do not edit by hand. -->

The core (every module outside `cli/` and `_napari/`) imports neither napari nor Qt, and no
core module imports a shell.  Each shell translates: `cli/` turns options into parameters and
errors into exit codes, `_napari/` turns layers into arrays and errors into notifications;
both take their ranges, choices and messages from `_contract.py` and import only the core,
never each other.  The scikit-learn estimator (`_estimator.py`) and the public functions
(`_quantize.py`) are the Python API over the same engine.

A value travels one way: `_contract.py` (declared) → `_options.py` (one frozen options
object) → `_layout.py` / `_validation.py` (the image's shape and the checks that need it) →
`_histogram.py` (distinct colours and counts) → `_fit.py` (`_exact1d.py` for one channel) →
`_nearest.py` (every nearest-colour search) → `_paint.py` (labels and image) → a
`QuantizeResult`.  The parameter contract itself is the table in [api.md](api.md).

Modules in import order within each part (a module's imports come before it);
`python docs/make_architecture.py --print src/napari_kmeans_filter` adds their sizes.

{table(found)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", dest="other", type=Path, help="print another package's map")
    args = parser.parse_args()
    if args.other:
        print(table(modules(args.other), lines=True))
        return
    out = HERE / "architecture.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
