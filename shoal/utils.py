"""Leaf helpers every layer needs, with no torch and no Ray: `import_object` for the
`module:attr` strings of configs (rule rewards, environment and task factories), the base of
every config section, and the one exception type for config problems."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A config problem, already phrased for the user (field path + reason)."""


class ConfigSection(BaseModel):
    """Base of every config model: frozen, unknown keys rejected (so typos fail at load time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def import_object(spec: str) -> Any:
    """Import `module:attr`; a clear ValueError if it cannot be."""
    if ":" not in spec:
        raise ValueError(f"{spec!r} is not of the form module:function")
    mod_name, attr = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # any import failure is the user's to see
        raise ValueError(f"cannot import module {mod_name!r} ({type(e).__name__}: {e})") from None
    if not hasattr(mod, attr):
        raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
    return getattr(mod, attr)


class RunError(RuntimeError):
    """A run that cannot go on (e.g. a learner that can never get a batch), phrased for the
    user; the CLI prints it as one `shoal: error:` line."""
