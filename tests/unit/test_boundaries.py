"""The libraries never import Ray or the hosting layer.

The libraries are shoal.learner, shoal.rollout (rollout/envs included), shoal.reward,
shoal.buffer and the root modules shoal/*.py: plain Python + torch. Only shoal.services (and
shoal.deploy) may import `ray`; nothing below shoal.services imports it. Every .py file is read
with the AST (module-level, function-level and relative imports, resolved to full dotted names),
and every module is imported in a fresh interpreter to check that `ray` stays unloaded.
The import contracts in pyproject.toml check the same on the built wheel with import-linter
(tests/unit/test_packaging.py); this test needs no build and names file and line.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from shoal import SUBPACKAGES

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("learner", "rollout", "reward", "buffer")  # folders; each is shoal.<folder>
HOSTING = "shoal.services"


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def library_modules() -> dict[str, Path]:
    """Full module name -> file, for every .py file of the libraries (subfolders included) and
    the root modules shoal/*.py."""
    mods = {}
    files = [(f"shoal.{lib}", ROOT / lib, sorted((ROOT / lib).rglob("*.py"))) for lib in LIBRARIES]
    files.append(("shoal", ROOT / "shoal", sorted((ROOT / "shoal").glob("*.py"))))
    for package, folder, paths in files:
        for path in paths:
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([package, *parts])] = path
    return mods


def resolved_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, full dotted name) of every import anywhere in the file (functions, classes,
    try/if blocks), relative ones resolved against `module`. `from a.b import c` yields both
    `a.b` and `a.b.c` (c may be a submodule)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 >= len(base_parts):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
    return out


def _forbidden(name: str) -> bool:
    # `services` is the hosting layer's pre-`shoal` top-level name (a checkout root on sys.path
    # would still resolve it).
    return _is_under(name, "ray") or _is_under(name, HOSTING) or _is_under(name, "services")


def test_module_walk_covers_every_library_folder():
    mods = library_modules()
    for name in (
        "shoal.rollout.envs",
        "shoal.rollout.envs.base",
        "shoal.learner.ppo",
        "shoal.core",
        "shoal.types",
        "shoal.utils",
    ):
        assert name in mods, name
    assert not any(_is_under(m, HOSTING) or _is_under(m, "shoal.deploy") for m in mods)


def test_resolved_imports_resolve_relative_and_nested_imports(tmp_path):
    src = textwrap.dedent(
        """
        import os.path
        from . import sibling
        from ..base import Env

        def f():
            from ...services import config
            import ray.util

        class C:
            try:
                from shoal.services.metrics import MetricsSink
            except ImportError:
                pass
        """
    )
    path = tmp_path / "mod.py"
    path.write_text(src)
    names = {n for _, n in resolved_imports("shoal.rollout.envs.mod", path)}
    assert {
        "os.path",
        "shoal.rollout.envs",
        "shoal.rollout.envs.sibling",
        "shoal.rollout.base",
        "shoal.rollout.base.Env",
    } <= names
    assert {
        "shoal.services",
        "shoal.services.config",
        "ray.util",
        "shoal.services.metrics",
        "shoal.services.metrics.MetricsSink",
    } <= names
    forbidden = [n for _, n in resolved_imports("shoal.rollout.envs.mod", path) if _forbidden(n)]
    assert forbidden == [
        "shoal.services",
        "shoal.services.config",
        "ray.util",
        "shoal.services.metrics",
        "shoal.services.metrics.MetricsSink",
    ]
    init = tmp_path / "__init__.py"  # in a package's __init__, `.` is the package itself
    init.write_text("from . import x\nfrom .y import z\n")
    names = {n for _, n in resolved_imports("shoal.rollout.envs", init)}
    assert names == {"shoal.rollout.envs", "shoal.rollout.envs.x", "shoal.rollout.envs.y", "shoal.rollout.envs.y.z"}


def test_library_sources_do_not_import_ray_or_the_hosting_layer():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module} imports {name}"
        for module, path in library_modules().items()
        for line, name in resolved_imports(module, path)
        if _forbidden(name)
    ]
    assert offenders == [], "\n".join(offenders)


def test_library_sources_use_only_the_shoal_import_name():
    """No pre-rename top-level import (`learner.x`, `from rollout import y`): those resolve only
    with a checkout root on sys.path and break in the wheel."""
    stale = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for module, path in library_modules().items()
        for line, name in resolved_imports(module, path)
        if name.split(".")[0] in SUBPACKAGES
    ]
    assert stale == [], "\n".join(stale)


# A `module:attr` or dotted module string naming the hosting layer or a ray submodule (what
# shoal.utils.import_object loads lazily, e.g. the algorithm registry's builder strings).
_SPEC = re.compile(r"shoal\.services(\.\w+)*(:[\w.]+)?|(services|ray)((\.\w+)+(:[\w.]+)?|:[\w.]+)")


def test_spec_pattern():
    hits = ["shoal.services", "shoal.services.actors:RolloutActor", "services.program", "ray.util", "ray:get"]
    misses = ["ray", "services", "shoal.learner.ppo.builder:PPOBuilder", "array.x", "my ray.util", "shoal.servicesx"]
    assert [s for s in hits if not _SPEC.fullmatch(s)] == [] and [s for s in misses if _SPEC.fullmatch(s)] == []


def test_library_import_strings_do_not_name_the_hosting_layer():
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for path in library_modules().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SPEC.fullmatch(node.value.strip())
    ]
    assert offenders == [], "\n".join(offenders)


def test_library_modules_import_without_loading_ray():
    """Importing every library module in a fresh interpreter leaves `ray` out of sys.modules
    (this also catches ray pulled in through a third-party package). vllm_engine imports vLLM
    lazily, inside its methods, so it is included."""
    mods = sorted(library_modules())
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for m in {mods!r}:
            importlib.import_module(m)
            if "ray" in sys.modules:
                sys.exit(f"importing {{m}} loaded ray")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]


HEAVY = ("torch", "transformers", "ray.rllib")


def heavy_imports_of(code: str) -> str:
    """Which of HEAVY a fresh interpreter has loaded after running `code` ("" when none)."""
    check = f"import sys\n{textwrap.dedent(code)}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    return r.stdout.strip()


def test_the_buffer_actor_starts_without_torch_or_rllib():
    """Every actor process imports shoal.services.actors; the replay buffer's (PPO, GRPO) must
    not pay for torch or RLlib there (seconds of CPU on a small machine while the learner and
    workers start beside it: benchmarks/startup.py)."""
    code = """
        import shoal.services.actors as actors
        from shoal.services.config import load_config
        for path in ("deploy/configs/demo.yaml", "deploy/configs/grpo_demo.yaml"):
            actors.make_builder(load_config(path, [])).make_replay()
        """
    assert heavy_imports_of(code) == ""


def test_the_driver_imports_the_program_without_torch_or_rllib():
    """`shoal train` imports the Ray program before Ray starts: torch and RLlib there would
    delay ray.init by seconds on a small machine (torch comes with the first request's
    tokenizer, in a thread beside ray.init). RLlib is not imported at all any more: its actor
    manager cost ~2.7 s of CPU (torch, Ray Tune, gymnasium)."""
    assert heavy_imports_of("import shoal.services.program") == ""


def test_the_first_request_is_built_without_torch(tiny_model_dir):
    """The driver's first request (prompts encoded by the policy's tokenizer) is built while
    Ray starts: a `shoal init-model` directory's tokenizer loads without AutoTokenizer, whose
    import brings transformers' model registry and torch (~2.8 s of CPU, beside the actors)."""
    code = f"""
        from shoal.builders import make_builder
        from shoal.services.config import load_config
        cfg = load_config("deploy/configs/demo.yaml", ["model.path={tiny_model_dir}"])
        assert len(make_builder(cfg).new_request()) == cfg.rollout.prompts_per_request
        """
    assert heavy_imports_of(code) == "transformers"
