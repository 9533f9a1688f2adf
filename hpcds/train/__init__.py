"""Training: the loop (trainer), data split and order (data), learning-rate schedule,
EMA, checkpoints, RNG capture, fixed-draw validation and metrics. See trainer.py."""

from hpcds.train.trainer import train

__all__ = ["train"]
