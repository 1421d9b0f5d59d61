"""Shoal: a distributed actor-learner system for reinforcement learning with language models.

One import name, `shoal`, over the project's top-level folders:

    shoal.core, shoal.types      roles and wire types (the contracts every layer implements)
    shoal.utils, shoal.models    leaf helpers every layer needs (import_object, padding,
                                 teacher-forced log-probs, model loading)
    shoal.builders               the ActorLearnerBuilder contract and the algorithm registry
    shoal.buffer   <- buffer/    replay tables and adders
    shoal.rollout  <- rollout/   engines, prompt and episode workers, tasks, text environments
    shoal.reward   <- reward/    scorers, Bradley-Terry, preference data
    shoal.learner  <- learner/   shared math and one folder per algorithm
    shoal.services <- services/  the hosting layer: Ray actors, the program, the local loop, metrics
    shoal.deploy   <- deploy/    the CLI, configs, cluster files

In a built wheel these are real subpackages of `shoal/` (setuptools `package-dir`, see
pyproject.toml). In a source checkout (a plain clone, `ray job submit --working-dir .`, the
editable install) the folders sit beside this package, so the checkout root is added to this
package's search path, restricted to those six folders by `_CheckoutFinder`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import time
from pathlib import Path

__version__ = "0.1.0"
PROCESS_STARTED = time.time()  # first import of shoal: the start of a `shoal` command (start-up timings)

SUBPACKAGES = ("services", "learner", "rollout", "reward", "buffer", "deploy")

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds `shoal.<folder>` for the six top-level folders of a source checkout, and nothing
    else (so `shoal.tests` or `shoal.benchmarks` do not exist)."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - importlib's signature
        parts = fullname.split(".")
        if len(parts) != 2 or parts[0] != __name__ or parts[1] not in SUBPACKAGES:
            return None
        folder = _CHECKOUT / parts[1]
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _in_checkout() -> bool:
    return not (_HERE / "services").is_dir() and (_CHECKOUT / "services" / "__init__.py").is_file()


if _in_checkout() and not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutFinder())
