"""A model and its checkpoint: the one seam between training and sampling.

format    the checkpoint files (save/load, compatibility and resume checks, reading a saved
          config back with the values of keys it predates, the statistics file's name)
denoiser  `build_denoiser`: the network a config describes, wrapped in EDMPrecond

Below `hpcds.train` and `hpcds.ensemble`, which both use it and never import each other.
"""

from hpcds.checkpoint.denoiser import build_denoiser
from hpcds.checkpoint.format import (LATEST, STATS_NAME, check_compatible, check_resumable,
                                     config_from_yaml, load_checkpoint, load_model_weights,
                                     save_checkpoint, step_name)

__all__ = ["LATEST", "STATS_NAME", "build_denoiser", "check_compatible",
           "check_resumable", "config_from_yaml", "load_checkpoint", "load_model_weights",
           "save_checkpoint", "step_name"]
