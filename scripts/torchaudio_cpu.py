"""Make torchaudio >= 2.9 importable next to a CPU-only torch.

The torchaudio wheels on PyPI ship compiled extensions (``torchaudio/lib/*.so``) linked against
CUDA libraries; with a CPU build of torch ``import torchaudio`` then fails (``libc10_cuda.so``).
Without those files torchaudio runs in pure-Python mode, and everything this project uses from it
(MelSpectrogram, resample, phase_vocoder, functional filters) works. File I/O goes through soundfile.
This script removes the extensions only when the import fails for that reason.
"""
import glob
import os
import subprocess
import sys


def import_error() -> str:
    r = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    return "" if r.returncode == 0 else r.stderr.strip().splitlines()[-1]


def main() -> int:
    err = import_error()
    if not err:
        return 0
    import importlib.util

    spec = importlib.util.find_spec("torchaudio")
    if spec is None or "cuda" not in err.lower() and ".so" not in err:
        print(f"torchaudio import fails for another reason: {err}", file=sys.stderr)
        return 1
    lib = os.path.join(os.path.dirname(spec.origin), "lib")
    removed = [os.remove(p) or os.path.basename(p) for p in glob.glob(os.path.join(lib, "*.so"))]
    print(f"torchaudio: removed CUDA-linked extensions {removed}; running in pure-Python mode")
    err = import_error()
    if err:
        print(f"torchaudio still fails to import: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
