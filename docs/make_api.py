"""Write docs/api.md from the public docstrings (run: python docs/make_api.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

import napari_kmeans_filter as nkf

PUBLIC = ["quantize", "fit_palette", "apply_palette", "Palette", "QuantizeResult"]
HELPERS = ["add_result_layers", "quantize_layer"]


def _section(name: str, obj) -> str:
    try:
        signature = f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        signature = name
    doc = inspect.cleandoc(obj.__doc__ or "")
    return f"## `{name}`\n\n```python\n{signature}\n```\n\n```text\n{doc}\n```\n"


def _contract_table() -> str:
    """Every public parameter as the contract declares it (the one place its rule lives)."""
    from napari_kmeans_filter._contract import PARAMETERS

    rows = [
        "## The parameter contract\n",
        "Declared once in `napari_kmeans_filter/_contract.py`; the functions validate from it,",
        "and the command line's options and the widget's controls take their ranges from it. A",
        "bad value raises `ValueError`/`TypeError` (both: `InvalidParameterError`) before any",
        "work, in one shape: `The 'name' parameter must <rule>. Got <value> instead.`\n",
        "| parameter | accepted | default | widget offers |",
        "|---|---|---|---|",
    ]
    for parameter in PARAMETERS.values():
        default = "" if parameter.default is None else f"`{parameter.default!r}`"
        ui = parameter.ui.bounds_text() if parameter.ui is not None else ""
        if ui:
            ui += f" ({parameter.ui_reason})"
        accepted = parameter.describe().replace("|", "\\|")
        rows.append(f"| `{parameter.name}` | {accepted} | {default} | {ui} |")
    return "\n".join(rows) + "\n"


def render() -> str:
    """The text of docs/api.md."""
    parts = [
        "# API reference\n",
        "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand.\n",
        "Everything here is importable from `napari_kmeans_filter`. The core functions never",
        "import napari or Qt; the two napari helpers at the end import napari when first used.\n",
        f"`MAX_N_COLORS = {nkf.MAX_N_COLORS}`, `COLOR_SPACES = {nkf.COLOR_SPACES}`.\n",
    ]
    parts += [_section(name, getattr(nkf, name)) for name in PUBLIC]
    parts.append(_contract_table())
    parts.append("# napari helpers\n")
    parts += [_section(name, getattr(nkf, name)) for name in HELPERS]
    return "\n".join(parts)


def main() -> None:
    out = Path(__file__).with_name("api.md")
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
