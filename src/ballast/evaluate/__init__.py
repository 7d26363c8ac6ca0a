"""Evaluation on the held-out human set: per-example policy scores, per-slice aggregates."""
