#!/usr/bin/env bash
# Create .venv (once) and install sparselens with everything it needs.
# torch is installed first and pinned, so pip takes the build that fits this machine
# (a CPU wheel where one is provided locally, the standard CUDA build elsewhere) and the
# project's looser "torch>=2.4" requirement is then already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SPARSELENS_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.sparselens-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC"
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
fi
echo "setup: installing sparselens and its dependencies (first run takes a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,docs]"
echo "$want" > "$stamp"
