"""A deliberately broken rule reward, for testing the rejected-score path end to end.

    reward.rule_functions: [shoal.reward.faults:nan_sometimes]   # or nan_always

Returns NaN for every fourth prompt (prompt ids end in a running number: `keywords-p12`), else
0.0: the scoring stage must reject those rollouts, count them (`reward/rejected_nonfinite`) and
go on. Deterministic, so three quarters of any batch - and of an evaluation - is still scored.
"""

from __future__ import annotations

import re
from typing import Any


def nan_sometimes(prompt: Any, response_text: str) -> float:
    number = re.search(r"(\d+)$", prompt.prompt_id)
    return float("nan") if number is not None and int(number.group(1)) % 4 == 0 else 0.0


def nan_always(prompt: Any, response_text: str) -> float:
    """NaN for every rollout: nothing can ever be trained (the run must stop and say why)."""
    return float("nan")


def returns_text(prompt: Any, response_text: str) -> str:
    """Not a number: `shoal train` must refuse it before the run starts."""
    return response_text
