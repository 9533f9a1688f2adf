"""Training: the loop (trainer), where a run starts (resume), data split and order (data),
learning-rate schedule, EMA, RNG capture, fixed-draw validation and metrics. See trainer.py.
The checkpoint format and the model's assembly are shared with sampling: `hpcds.checkpoint`."""

from hpcds.train.trainer import train

__all__ = ["train"]
