"""The dtype of the model's graph index tensors, and the one conversion to it.

Graph senders/receivers (hpcds/models/graphs.py), the shard-local ones of
hpcds/distributed/halo.py and the planner's meta graphs are all INDEX_DTYPE. Kept apart from
both packages so that either imports it without importing the other.
"""

from __future__ import annotations

import numpy as np
import torch

# dtype of every graph index tensor the model holds (senders, receivers; the GraphShards of
# hpcds/distributed/halo.py; the planner's meta graphs): int32 halves the index memory (an
# O2560 shard of 4 holds ~105 M edges: 0.8 GiB of indices instead of 1.6 GiB), and every grid
# here has < 2^31 nodes. Every graph-attention backend takes int32 and int64.
INDEX_DTYPE = torch.int32
_INDEX_NP = np.int32


def index_tensor(a) -> torch.Tensor:
    """An index array (any integer dtype) as a CPU tensor of INDEX_DTYPE, without a copy when
    it already is one; ValueError when a value does not fit (a grid of 2^31 or more nodes)."""
    a = np.asarray(a)
    if a.dtype != _INDEX_NP:
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"graph indices must be integers, got {a.dtype}")
        info = np.iinfo(_INDEX_NP)
        if a.size and (int(a.min()) < info.min or int(a.max()) > info.max):
            raise ValueError(f"graph indices in [{int(a.min())}, {int(a.max())}] do not fit in "
                             f"{INDEX_DTYPE}: a grid of 2^31 or more nodes needs "
                             f"hpcds.indices.INDEX_DTYPE = torch.int64")
        a = a.astype(_INDEX_NP)
    return torch.from_numpy(np.ascontiguousarray(a))
