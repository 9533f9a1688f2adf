"""Run by the side venv's Python (.venv-anemoi, the real anemoi-datasets): open a store with
`anemoi.datasets.open_dataset` and dump what it reads.

    python anemoi_read.py STORE OUT.npz

OUT.npz: data (time, variable, ensemble, cell) float32 as `ds[:]` gives it, dates,
latitudes, longitudes; OUT.json beside it: variables, variables_metadata, shape, frequency,
resolution, field_shape, constant_fields.
"""

import json
import sys
from pathlib import Path

import numpy as np
from anemoi.datasets import open_dataset

store, out = sys.argv[1], Path(sys.argv[2])
ds = open_dataset(store)
np.savez(out, data=np.asarray(ds[:]), dates=np.asarray(ds.dates),
         latitudes=np.asarray(ds.latitudes), longitudes=np.asarray(ds.longitudes))
meta = {
    "variables": list(ds.variables),
    "variables_metadata": ds.variables_metadata,
    "shape": list(ds.shape),
    "frequency": str(ds.frequency),
    "resolution": ds.resolution,
    "field_shape": list(ds.field_shape),
    "constant_fields": list(ds.constant_fields),
}
out.with_suffix(".json").write_text(json.dumps(meta, default=str))
