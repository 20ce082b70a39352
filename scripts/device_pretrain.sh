#!/usr/bin/env bash
# Pretraining on a GPU machine from a kit made by `mart-bench device-pack` (see docs/gpu.md):
#   bash scripts/device_pretrain.sh --kit .device_kit --minutes 7 --models mart,pemr,simclr --device cuda \
#       --out runs/gpu [--smoke] [--sequential] [--bundle DIR]
# Where `import soundfile` fails, the kit's wheels (soundfile, cffi, pycparser) are installed into
# /tmp/site (no network needed); then benchmarks.device.pretrain runs with all the arguments.
# PYTHON picks the interpreter (default python3).
# --profile: instead of training, profile each model's real training step alone (benchmarks.device.profile:
# top kernels, kernels per step, host gaps; eager vs compiled), e.g.
#   bash scripts/device_pretrain.sh --profile --kit .device_kit --out $OUT/profile --batches 48 --variants eager,compile
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
KIT="$REPO/.device_kit"
MODULE=benchmarks.device.pretrain
args=()
for a in "$@"; do
  if [ "$a" = "--profile" ]; then MODULE=benchmarks.device.profile; else args+=("$a"); fi
done
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --kit) KIT="${args[i + 1]:-}" ;;
    --kit=*) KIT="${args[i]#--kit=}" ;;
  esac
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
shopt -s nullglob
wheels=("$KIT"/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ] && ! "$PY" -c "import soundfile" 2>/dev/null; then
  SITE="${DEVICE_SITE:-/tmp/site}"
  echo "device_pretrain.sh: installing ${#wheels[@]} wheels from $KIT/wheels into $SITE" >&2
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" >&2; then
    echo "device_pretrain.sh: pip failed; unpacking the wheels into $SITE instead" >&2
    mkdir -p "$SITE"
    for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$SITE"; done
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
  if ! "$PY" -c "import soundfile" >&2; then
    echo "device_pretrain.sh: error: soundfile still cannot be imported after installing $KIT/wheels" >&2
    exit 2
  fi
fi
exec "$PY" -m "$MODULE" ${args[@]+"${args[@]}"}
