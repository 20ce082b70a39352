#!/usr/bin/env bash
# Installs the project and its test tools into a fresh virtualenv (default .venv) on a CPU machine.
# torch is held at the local CPU build by constraints.txt; anything else would pull CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -c constraints.txt "torch==2.13.0"
"${PIP[@]}" -c constraints.txt -e ".[test]"
"$VENV/bin/python" scripts/torchaudio_cpu.py
"$VENV/bin/python" -c "import torch, torchaudio, mart_upstream; print('installed: torch', torch.__version__, '| torchaudio', torchaudio.__version__, '| mart_upstream', mart_upstream.__version__)"
