"""Pretraining on a GPU machine that has no network: pack a kit here, train there, evaluate here.

* ``pack``   (``mart-bench device-pack``): the pretraining pool as 16 kHz mono Ogg/Opus, the wheels
  the machine lacks (soundfile, cffi, pycparser) and a manifest, in one folder under a size limit;
* ``pretrain`` (``scripts/device_pretrain.sh`` -> ``python -m benchmarks.device.pretrain``): every model
  for a time budget, compact checkpoints, throughput and GPU use in ``device_run.json``, and the run
  folder as a few tar parts small enough to come back;
* ``unpack`` (``mart-bench device-unpack``): the parts back into a run folder, whose checkpoints
  ``mart-bench run --checkpoints`` evaluates.

See ``docs/gpu.md``.
"""
