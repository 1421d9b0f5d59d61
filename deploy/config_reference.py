"""The config reference, generated from the pydantic models' field descriptions.

`python -m shoal.deploy.config_reference --write README.md` refreshes the README's section between
the BEGIN/END markers; a unit test fails when the README is out of date.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shoal.services.config import ShoalConfig


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def config_reference() -> str:
    """Markdown tables, one per section: field, type, default, description."""
    out = []
    for section, field in ShoalConfig.model_fields.items():
        model: type[BaseModel] = field.annotation  # type: ignore[assignment]
        out.append(f"### `{section}` - {field.description}\n")
        out.append("| field | type | default | description |\n|---|---|---|---|")
        for name, f in model.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            out.append(f"| `{section}.{name}` | `{_type_name(f.annotation)}` | `{default!r}` | {f.description} |")
        out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- BEGIN CONFIG REFERENCE -->", "<!-- END CONFIG REFERENCE -->"


def with_reference(readme: str) -> str:
    """The README text with its generated section replaced by the current reference."""
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{config_reference()}\n{END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(with_reference(path.read_text()))
    else:
        print(config_reference())
