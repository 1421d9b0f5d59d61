"""The config reference, generated from the pydantic models' field descriptions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.config import ShoalConfig


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
