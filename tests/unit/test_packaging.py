"""The built wheel: one import name `shoal` holding every package folder and data file, and the
import contracts of pyproject.toml ([tool.importlinter]) checked on it.

The contracts are checked on the unpacked wheel, not the checkout: grimp finds a package's
modules by walking its folder, and in a checkout the subpackages (services/, learner/, ...) sit
beside shoal/, not in it. lint-imports puts its working directory first on sys.path, so it runs
from the unpacked folder (running it from the checkout root would pick the checkout's shoal/).
deploy/lint.sh does the same for people and CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal import SUBPACKAGES

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Source folder -> import name, e.g. "services" -> "shoal.services" (from [tool.setuptools.package-dir]).
PACKAGE_DIRS = {folder: name for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


@dataclass(frozen=True)
class Wheel:
    path: Path
    names: frozenset[str]  # every file in the wheel, '/'-separated
    site: Path  # the wheel unpacked: shoal/services/... are real subpackages here
    dist_info: str  # "shoal-<version>.dist-info"


def _build_wheel(dest: Path) -> Path:
    """Build the wheel from a copy of the sources (the root files and the mapped folders), so the
    checkout gets no build/ folder and concurrent runs do not share one."""
    src = dest / "src"
    src.mkdir()
    for p in ROOT.iterdir():
        if p.is_file():
            shutil.copy2(p, src / p.name)
    for folder in sorted(PACKAGE_DIRS):
        shutil.copytree(ROOT / folder, src / folder, ignore=_IGNORE)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        str(dest / "dist"),
        str(src),
    ]
    r = _run(cmd, cwd=dest, timeout=300)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout}\n{r.stderr}"
    (wheel,) = (dest / "dist").glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Wheel:
    tmp = tmp_path_factory.mktemp("wheel")
    path = _build_wheel(tmp)
    site = tmp / "site"
    with zipfile.ZipFile(path) as z:
        names = frozenset(z.namelist())
        z.extractall(site)
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    return Wheel(path, names, site, dist_info)


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=timeout)


def _python_in(site: Path, code: str) -> subprocess.CompletedProcess:
    """`python -c code` with `site` (an unpacked wheel) first on sys.path."""
    return _run([sys.executable, "-c", code], cwd=site, env=_env(site))


def _lint_imports(site: Path) -> subprocess.CompletedProcess:
    """lint-imports with the checkout's pyproject.toml, run from `site` (an unpacked wheel)."""
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    )
    cmd += ["--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"]
    return _run(cmd, cwd=site, env=_env(site))


def _assert_site_wins(site: Path) -> None:
    """Under the lint's environment `import shoal` must be the unpacked wheel, not the checkout
    (nor the editable install)."""
    r = _python_in(site, "import shoal; print(shoal.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == site / "shoal" / "__init__.py", r.stdout


# -- the wheel's contents ----------------------------------------------------------------------


def test_wheel_holds_only_the_shoal_import_name(wheel):
    top_level = (wheel.site / wheel.dist_info / "top_level.txt").read_text().split()
    assert top_level == ["shoal"]
    entries = {n.split("/")[0] for n in wheel.names} - {wheel.dist_info}
    assert entries == {"shoal"}, (
        f"top-level entries besides shoal/ and {wheel.dist_info}: {sorted(entries - {'shoal'})}"
    )
    assert all(n.startswith("shoal/") for n in wheel.names if not n.startswith(wheel.dist_info + "/"))


def test_every_package_folder_is_in_the_wheel(wheel):
    """Each folder with an __init__.py (and each module in it) under shoal/ and the six folders is
    in the wheel as shoal/<...>: a subfolder missing from [tool.setuptools] packages fails here."""
    assert set(PACKAGE_DIRS) == {"shoal", *SUBPACKAGES}, (
        "[tool.setuptools.package-dir] must map shoal/ and shoal.SUBPACKAGES"
    )
    missing = []
    for folder in ("shoal", *SUBPACKAGES):
        prefix = PACKAGE_DIRS[folder].replace(".", "/")
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            pkg = init.parent
            if "__pycache__" in pkg.parts:
                continue
            rel = pkg.relative_to(ROOT / folder).as_posix()
            in_wheel = prefix if rel == "." else f"{prefix}/{rel}"
            for mod in sorted(pkg.glob("*.py")):
                if f"{in_wheel}/{mod.name}" not in wheel.names:
                    missing.append(
                        f"{pkg.relative_to(ROOT).as_posix()}/{mod.name} -> {in_wheel}/{mod.name} ({in_wheel.replace('/', '.')})"
                    )
    assert not missing, "not in the wheel (list the package in pyproject's [tool.setuptools] packages):\n" + "\n".join(
        missing
    )


def test_package_data_is_in_the_wheel(wheel):
    # Each [tool.setuptools.package-data] pattern matches files in the checkout, all shipped.
    missing, patterns_matching_nothing = [], []
    for pkg, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        # the longest mapped package containing pkg: "shoal.services.dashboard" -> services/dashboard
        mapped = max((n for n in PACKAGE_DIRS.values() if pkg == n or pkg.startswith(n + ".")), key=len)
        folder = next(f for f, n in PACKAGE_DIRS.items() if n == mapped)
        src = ROOT / folder / Path(*pkg.split(".")[mapped.count(".") + 1 :])
        for pattern in patterns:
            files = sorted(p for p in src.glob(pattern) if p.is_file())
            if not files:
                patterns_matching_nothing.append(f"{pkg}: {pattern}")
            for f in files:
                name = pkg.replace(".", "/") + "/" + f.relative_to(src).as_posix()
                if name not in wheel.names:
                    missing.append(name)
    assert not patterns_matching_nothing, patterns_matching_nothing
    assert not missing, missing
    # The data the runtime needs, named outright.
    configs = {n for n in wheel.names if n.startswith("shoal/deploy/configs/") and n.endswith(".yaml")}
    assert {
        f"shoal/deploy/configs/{p.name}" for p in (ROOT / "deploy" / "configs").glob("*.yaml")
    } <= configs and configs
    static = {n for n in wheel.names if n.startswith("shoal/services/dashboard/static/")}
    assert {
        f"shoal/services/dashboard/static/{p.name}"
        for p in (ROOT / "services" / "dashboard" / "static").iterdir()
        if p.is_file()
    } <= static
    assert "shoal/services/dashboard/static/index.html" in static


def test_console_scripts_point_into_the_wheel(wheel):
    text = (wheel.site / wheel.dist_info / "entry_points.txt").read_text()
    targets = [line.split("=", 1)[1].strip() for line in text.splitlines() if "=" in line]
    assert targets, text
    for target in targets:
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in wheel.names or f"{module}/__init__.py" in wheel.names, target


# -- the import contracts ----------------------------------------------------------------------


def test_import_contracts(wheel):
    """pyproject's [tool.importlinter] contracts (layers, no ray / shoal.services in the libraries,
    ray only in the hosting layer, no cycles between siblings, no pre-rename top-level imports)
    hold on the built wheel."""
    _assert_site_wins(wheel.site)
    r = _lint_imports(wheel.site)
    assert r.returncode == 0, f"lint-imports failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"


_CYCLES = textwrap.dedent(
    """
    import sys
    import grimp

    graph = grimp.build_graph("shoal", cache_dir=None)
    assert graph.find_children("shoal") >= {"shoal.services", "shoal.learner"}, graph.find_children("shoal")
    out = []
    for parent in sorted(m for m in graph.modules if graph.find_children(m)):
        depth = parent.count(".") + 2

        def child(m):
            return ".".join(m.split(".")[:depth])

        edges = {}
        for m in graph.find_descendants(parent):
            for x in graph.find_modules_directly_imported_by(m):
                if x.startswith(parent + ".") and child(x) != child(m):
                    lines = [d["line_number"] for d in graph.get_import_details(importer=m, imported=x)]
                    edges.setdefault((child(m), child(x)), []).append(f"{m} -> {x} (line {lines})")
        adj = {}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
        index, low, stack, on, comps = {}, {}, [], set(), []

        def visit(v):  # Tarjan's strongly connected components
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(adj.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))

        for v in sorted(adj):
            if v not in index:
                visit(v)
        for comp in comps:
            out.append(f"cycle among the children of {parent}: {', '.join(comp)}")
            out += [f"    {e}" for (a, b), es in sorted(edges.items()) if a in comp and b in comp for e in es]
    print("\\n".join(out))
    sys.exit(1 if out else 0)
    """
)


def test_no_import_cycles_between_siblings(wheel):
    """Exact cycles (with the imports that make them) between sibling packages/modules at every
    depth; the acyclic_siblings contract reports only a nominated set of imports to remove."""
    r = _python_in(wheel.site, _CYCLES)
    assert r.returncode == 0, f"import cycles:\n{r.stdout}\n{r.stderr}"


def test_contracts_catch_planted_violations(wheel, tmp_path):
    """The harness is live: violations planted in a copy of the unpacked wheel are reported."""
    site = tmp_path / "site"
    shutil.copytree(wheel.site, site)
    planted = {
        "shoal/buffer/fifo.py": "\nimport ray  # planted\n",
        # a function-level relative import in rollout/envs: shoal.rollout.envs -> ... -> shoal
        "shoal/rollout/envs/base.py": "\n\ndef _planted():\n    from ...services import config  # noqa\n",
        "shoal/core.py": "\nfrom shoal.learner import losses  # planted\n",
        "shoal/reward/_planted_a.py": "from shoal.reward import _planted_b\n",
        "shoal/reward/_planted_b.py": "from . import _planted_a\n",
        "shoal/learner/kl.py": "\nfrom rollout import tasks  # planted: a pre-rename top-level name\n",
    }
    for name, text in planted.items():
        with open(site / name, "a") as f:
            f.write(text)
    _assert_site_wins(site)
    r = _lint_imports(site)
    out = " ".join(r.stdout.split())
    assert r.returncode != 0, out
    expected = [
        "shoal.buffer.fifo -> ray",  # libraries-no-ray (forbidden) and ray-only-in-hosting
        "shoal.rollout.envs.base -> shoal.services.config",  # function-level, relative, in rollout/envs
        "shoal.core -> shoal.learner.losses",  # a root module importing up the layers
        "No cycles are allowed in shoal.reward",
        "shoal.learner.kl -> rollout",  # one-import-name
    ]
    assert [e for e in expected if e not in out] == [], r.stdout
    r = _python_in(site, _CYCLES)
    assert r.returncode == 1 and "shoal.reward._planted_a, shoal.reward._planted_b" in r.stdout, r.stdout + r.stderr
