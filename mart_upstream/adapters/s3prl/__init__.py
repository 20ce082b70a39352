"""S3PRL plugin: an upstream per registered model (``mart``, ``pemr``, ``simclr``, ``cnn5_infonce``, ...) and
three music downstreams.

``s3prl run_downstream ...`` / ``s3prl main ...`` (``launcher.py``) register them into an unmodified
s3prl at run time and then hand over to s3prl's own runners. ``hubconf.py`` names the upstream entry
points, ``expert.py`` wraps a pretrained model, ``downstream/<task>/`` holds the tasks: thin layers over
``mart_upstream.tasks``, which reads the datasets.
"""
from mart_upstream.errors import UsageError


# The upstreams this plugin adds, by model name (each also as NAME_local). Kept here, free of torch, so that
# ``s3prl -h`` answers at once; a test checks it against the model registry.
UPSTREAM_MODELS = ("mart", "pemr", "simclr", "cnn5_infonce", "cnn5_multilevel", "melcpc", "byol", "moco", "musicnn")
UPSTREAM_NAMES = tuple(f"{m}{suffix}" for m in UPSTREAM_MODELS for suffix in ("", "_local"))


class PluginError(UsageError):
    """A bad name, option or setting given to the s3prl commands: reported as one line (with the other
    :class:`mart_upstream.errors.MartError` types: TaskError, AudioError, CheckpointError)."""
