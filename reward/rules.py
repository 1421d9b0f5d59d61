"""Checking a rule reward (`reward.rule_functions: [module:function]`) before a run starts,
without torch (the Ray driver calls it before any actor exists). RuleScorer
(`reward/scorers.py`) calls the same functions at run time.
"""

from __future__ import annotations

import numbers

from shoal.types import Prompt
from shoal.utils import import_object


def rule_function_problem(spec: str, prompt: Prompt, response_text: str) -> str | None:
    """Why rule reward `spec` cannot score (not importable, not callable, raises, or returns
    something other than a number on this probe rollout), or None. NaN is allowed here: the
    scoring stage rejects and counts non-finite scores at run time."""
    try:
        fn = import_object(spec)
    except Exception as e:  # import_object's own message names the spec
        return f"{spec}: {e}"
    if not callable(fn):
        return f"{spec} is not callable ({type(fn).__name__})"
    try:
        value = fn(prompt, response_text)
    except Exception as e:
        return f"{spec} raised {type(e).__name__}: {e} on a probe rollout (prompt {prompt.text!r}, answer {response_text!r})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{spec} returned {type(value).__name__} {value!r:.80} on a probe rollout; a rule reward returns a float"
    return None
