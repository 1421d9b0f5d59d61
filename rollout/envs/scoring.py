"""LMRL-Gym normalised score (Abdulhai et al.): a return mapped piecewise linearly so that the
task's minimum return scores 0, the data set's average return 50 and the maximum return 100.

Between the anchors the map is linear; outside [min, max] it extrapolates with the slope of
the nearest segment (a policy worse than the stated minimum scores below 0). The anchors must
satisfy min < average < max: with a degenerate data set the score is undefined and a
ValueError says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _check(min_return: float, average_return: float, max_return: float) -> None:
    if not min_return < average_return < max_return:
        raise ValueError(
            f"normalised score needs min < average < max return, got min={min_return}, average={average_return}, max={max_return}"
        )


def normalized_score(ret: float, min_return: float, average_return: float, max_return: float) -> float:
    """0 at `min_return`, 50 at `average_return` (the data set's mean), 100 at `max_return`."""
    _check(min_return, average_return, max_return)
    if ret <= average_return:
        return 50.0 * (ret - min_return) / (average_return - min_return)
    return 50.0 + 50.0 * (ret - average_return) / (max_return - average_return)


def normalized_scores(
    returns: Sequence[float] | np.ndarray, min_return: float, average_return: float, max_return: float
) -> np.ndarray:
    """`normalized_score` of many returns at once (float64 array)."""
    _check(min_return, average_return, max_return)
    r = np.asarray(returns, dtype=np.float64)
    low = 50.0 * (r - min_return) / (average_return - min_return)
    high = 50.0 + 50.0 * (r - average_return) / (max_return - average_return)
    return np.where(r <= average_return, low, high)


def dataset_anchors(returns: Iterable[float]) -> tuple[float, float, float]:
    """(min, mean, max) of a data set's episode returns: the anchors when the task's own
    minimum and maximum returns are taken from the data (as in `shoal collect`'s summary)."""
    r = np.asarray(list(returns), dtype=np.float64)
    if r.size == 0:
        raise ValueError("no returns")
    return float(r.min()), float(r.mean()), float(r.max())


__all__ = ["dataset_anchors", "normalized_score", "normalized_scores"]
