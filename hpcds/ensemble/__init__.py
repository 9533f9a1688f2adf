"""Parallel ensemble generation and its output stores.

generate  `generate(cfg)`: sample HR ensembles for every date (and LR member) into a store
model     `load_sampling_model`: checkpoint → EMA-weighted EDMPrecond + normalisation
output    the ensemble store: anemoi layout, atomic creation, per-(date, member) done flags
"""

from hpcds.ensemble.generate import GenerateResult, generate, open_ensemble
from hpcds.ensemble.model import SamplingModel, load_sampling_model
from hpcds.ensemble.output import (EnsembleLayout, EnsembleStore, check_identity,
                                   create_ensemble_store, open_or_create)

__all__ = ["generate", "GenerateResult", "open_ensemble", "SamplingModel",
           "load_sampling_model", "EnsembleLayout", "EnsembleStore", "check_identity",
           "create_ensemble_store", "open_or_create"]
