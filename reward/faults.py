"""A deliberately broken rule reward, for testing the rejected-score path end to end.

    reward.rule_functions: [shoal.reward.faults:nan_sometimes]

Returns NaN for responses whose length in characters is divisible by 3, else 0.0: the scoring
stage must reject those rollouts, count them (`reward/rejected_nonfinite`) and go on.
"""

from __future__ import annotations

from typing import Any


def nan_sometimes(prompt: Any, response_text: str) -> float:
    return float("nan") if len(response_text) % 3 == 0 else 0.0
