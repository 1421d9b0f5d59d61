"""Libraries never import Ray: rollout/, reward/, buffer/, learner/ stay plain Python + torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ["rollout", "reward", "buffer", "learner"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_sources_do_not_import_ray():
    offenders = [str(p.relative_to(ROOT)) for lib in LIBRARIES for p in (ROOT / lib).rglob("*.py") if {"ray", "services.actors", "services.program"} & _imports(p)]
    assert offenders == []


def test_library_modules_import_without_loading_ray():
    mods = [f"{lib}.{p.stem}" for lib in LIBRARIES for p in (ROOT / lib).glob("*.py") if p.stem != "__init__" and "vllm" not in p.stem]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + "assert 'ray' not in sys.modules, [m for m in sys.modules if m.startswith('ray')][:5]\n"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
