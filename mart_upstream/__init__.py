"""Self-supervised music audio representations: MART, PEMR and contrastive baselines."""

__version__ = "0.1.0"
