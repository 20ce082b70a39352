#!/usr/bin/env bash
# Installs the project, the S3PRL and HEAR harnesses and the test tools into a virtualenv
# (default .venv) on a CPU machine. constraints.txt holds torch at the local CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
# Debian packages of the offline music benchmark: the fluidsynth renderer, two General-MIDI
# soundfonts (FluidR3_GM: MIT; TimGM6mb: GPL-2) and the music-only game soundtrack packages of the
# recordings corpus (wesnoth: GPL-2; ufoai: GPL-2 / CC-BY(-SA)-3.0; warzone2100: GPL-2+). The game data
# packages with more recordings (hundreds of MB each) are opt-in: `mart-bench data --game-data` prints
# their apt command when they are missing.
APT_PKGS=(fluidsynth libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont wesnoth-1.16-music ufoai-music
  warzone2100-music)
if ! dpkg -s "${APT_PKGS[@]}" >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
  else
    echo "install.sh: the offline benchmark needs: sudo apt-get install ${APT_PKGS[*]} (skipped: not root)" >&2
  fi
fi
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[test,bench,onnx]"
# S3PRL 0.4.18 and what its run_downstream imports without declaring it.
"${PIP[@]}" "s3prl==0.4.18" tensorboardX "huggingface_hub<1.0" "transformers<5" soxr
# HEAR 2021: the packages pin numpy==1.19.2 / numba==0.48 (no wheels for this Python), so they go
# in with --no-deps and their real runtime needs are installed here.
"${PIP[@]}" tensorflow-cpu click dcase-util intervaltree more-itertools nvidia-ml-py "pytorch-lightning<2" \
  python-slugify sed-eval torchinfo "librosa<0.10" resampy "setuptools<81" "numpy<2" scikit-learn pandas
"${PIP[@]}" --no-deps heareval==2021.1.3 hearvalidator==2021.0.2 hearbaseline==2021.1.1
# MusiCNN, the reference model with published weights: the package ships its TensorFlow 1 checkpoints
# (read without TensorFlow) but pins numpy < 1.17, hence --no-deps. tf-keras (Keras 2 under
# TF_USE_LEGACY_KERAS=1) runs musicnn's own graph for the parity test; --no-deps, so that it does not
# pull the `tensorflow` distribution next to tensorflow-cpu (both pinned in constraints.txt).
"${PIP[@]}" --no-deps musicnn==0.1.0 tf-keras
"$VENV/bin/python" scripts/torchaudio_cpu.py
"$VENV/bin/python" -c "import torch, torchaudio, numpy, mart_upstream; print('installed: torch', torch.__version__, '| torchaudio', torchaudio.__version__, '| numpy', numpy.__version__, '| mart_upstream', mart_upstream.__version__)"
