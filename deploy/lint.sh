#!/usr/bin/env bash
# Lint: the import contracts ([tool.importlinter] in pyproject.toml), then ruff.
#   bash deploy/lint.sh                 # PYTHON=/path/to/python to use another interpreter
#
# The import contracts are checked against the BUILT wheel: in a checkout the subpackages
# (services/, learner/, ...) are not inside shoal/, so grimp, which walks the package's folder,
# would see only shoal/*.py. The wheel is built from a copy of the sources (nothing is written
# to the checkout), unpacked into a temporary folder, and lint-imports runs from that folder
# (lint-imports puts its working directory first on sys.path, so running it from the checkout
# root would pick the checkout's shoal/ instead). Every step runs; the exit status is non-zero
# if any failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
BIN="$(dirname "$PY")"
LINT_IMPORTS="$BIN/lint-imports"; [ -x "$LINT_IMPORTS" ] || LINT_IMPORTS="$(command -v lint-imports)"
RUFF="$BIN/ruff"; [ -x "$RUFF" ] || RUFF="$(command -v ruff)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
status=0

echo "[lint] building the wheel"
# Copy the root files and the folders mapped in [tool.setuptools.package-dir], build, unpack.
if "$PY" - "$ROOT" "$TMP" <<'EOF'
import shutil, subprocess, sys, tomllib, zipfile
from pathlib import Path

root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
src, dist, site = tmp / "src", tmp / "dist", tmp / "site"
src.mkdir()
dirs = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
for p in root.iterdir():
    if p.is_file():
        shutil.copy2(p, src / p.name)
for d in sorted(dirs):
    shutil.copytree(root / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
r = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(src)],
    capture_output=True, text=True,
)
if r.returncode:
    sys.exit(f"pip wheel failed:\n{r.stdout}\n{r.stderr}")
(wheel,) = dist.glob("*.whl")
zipfile.ZipFile(wheel).extractall(site)
EOF
then
  SITE="$TMP/site"
  found="$(cd "$SITE" && PYTHONPATH="$SITE" "$PY" -c 'import shoal; print(shoal.__file__)')"
  if [ "$found" != "$SITE/shoal/__init__.py" ]; then
    echo "[lint] the unpacked wheel does not win: import shoal -> $found"; status=1
  else
    echo "[lint] import contracts (lint-imports on the built wheel)"
    (cd "$SITE" && PYTHONPATH="$SITE" "$LINT_IMPORTS" --config "$ROOT/pyproject.toml" --no-cache --no-logo) || status=1
  fi
else
  echo "[lint] could not build the wheel"; status=1
fi

cd "$ROOT"
echo "[lint] ruff check"
"$RUFF" check . || status=1
echo "[lint] ruff format --check"
"$RUFF" format --check . || status=1

[ "$status" = 0 ] && echo "[lint] all passed" || echo "[lint] FAILED"
exit "$status"
