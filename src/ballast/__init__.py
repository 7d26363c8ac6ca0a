"""ballast: policy-anchored instruction-tuning data from human seeds and a noisy synthetic pool."""

__version__ = "0.1.0"
