"""An octahedral pair from GRIB, through the real `anemoi-datasets create`, with the static
fields from `hpcds data forcings` (ETOPO5): what a user with only LR and HR weather datasets
on an O-grid does. HR O16 (1,600 cells) from LR O8 (544), 4 dates; GRIB written here with
eccodes (IEEE packing: exact float32), cells ring by ring from the north as in the field.
"""

from __future__ import annotations

import eccodes
import numpy as np

from hpcds.cli.main import main
from hpcds.config.load import load_config
from hpcds.data.cells import store_cells_for_grid
from hpcds.data.store import open_store
from hpcds.ensemble.output import EnsembleStore
from hpcds.grids import gaussian_latitudes, make_grid, octahedral_pl

DATES = np.arange("2026-01-01T00", "2026-01-02T00", 6, dtype="datetime64[h]").astype(
    "datetime64[s]")
GRIDS = ["grid.hr.name=O16", "grid.hr.area=global", "grid.lr.name=O8", "grid.lr.area=global",
         "grid.lr.margin_deg=0", "model.hidden_grid.name=O8", "model.hidden_grid.area=global"]
RUN = ["data.variables=[2t,10u]", "model.hidden_dim=16", "model.num_heads=2",
       "model.processor_layers=1", "model.noise_embedding_dim=16", "model.window=8",
       "training.steps=2", "training.val_dates=1", "training.warmup_steps=1",
       "training.val_every=0", "training.checkpoint_every=0", "sampling.steps=2",
       "sampling.members=1", "data.check_dates=4"]


def fields(lat, lon, hr: bool) -> dict[str, np.ndarray]:
    """(time, n) float64: travelling planetary waves; HR adds a 12° ripple."""
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    phase = 0.7 * np.arange(len(DATES))[:, None]
    out = {"2t": 288.0 - 30.0 * np.sin(la) ** 2 + 5.0 * np.sin(2 * lo + phase) * np.cos(la),
           "10u": 10.0 * np.cos(2 * la) + 3.0 * np.cos(lo - phase) * np.cos(la)}
    if hr:
        ripple = np.sin(30 * lo) * np.cos(30 * la)
        out = {k: v + ripple for k, v in out.items()}
    return out


def write_grib(path, n: int, hr: bool):
    """O<n> fields in native order (rows north → south, each from 0°E) as GRIB2."""
    grid = make_grid(load_config("tiny", [f"grid.hr.name=O{n}", "grid.hr.area=global"]).grid.hr)
    lat, lon = grid.to_native(grid.latitudes), grid.to_native(grid.longitudes)
    pl = octahedral_pl(n)
    with open(path, "wb") as f:
        for t, date in enumerate(DATES):
            day, hour = str(date)[:10].replace("-", ""), int(str(date)[11:13])
            for name, values in fields(lat, lon, hr).items():
                h = eccodes.codes_grib_new_from_samples("reduced_gg_pl_32_grib2")
                eccodes.codes_set(h, "N", n)
                eccodes.codes_set(h, "Nj", 2 * n)
                eccodes.codes_set_long_array(h, "pl", np.asarray(pl, dtype=np.int64))
                rows = gaussian_latitudes(2 * n)[0]
                eccodes.codes_set(h, "latitudeOfFirstGridPointInDegrees", float(rows[0]))
                eccodes.codes_set(h, "latitudeOfLastGridPointInDegrees", float(rows[-1]))
                eccodes.codes_set(h, "longitudeOfLastGridPointInDegrees",
                                  360.0 - 360.0 / int(pl.max()))
                eccodes.codes_set(h, "shortName", name)  # 2t, 10u: sets the height level too
                eccodes.codes_set(h, "dataDate", int(day))
                eccodes.codes_set(h, "dataTime", 100 * hour)
                eccodes.codes_set(h, "packingType", "grid_ieee")
                eccodes.codes_set_values(h, values[t])
                eccodes.codes_write(h, f)
                eccodes.codes_release(h)
    return path


def test_octahedral_grib_pair_with_etopo_forcings(anemoi, tmp_path, capsys):
    recipe = {"dates": {"start": str(DATES[0]), "end": str(DATES[-1]), "frequency": "6h"}}
    stores = {role: anemoi.create({**recipe, "input": {"grib": {"path": str(
        write_grib(tmp_path / f"{role}.grib", n, role == "hr"))}}}, tmp_path / f"{role}.zarr")
        for role, n in (("hr", 16), ("lr", 8))}
    argv = ["tiny", f"run.out_dir={tmp_path / 'run'}", *GRIDS, *RUN,
            f"data.hr_store={stores['hr']}", f"data.lr_store={stores['lr']}", "--quiet"]

    hr = open_store(stores["hr"])
    assert hr.resolution == "O16" and hr.units == {"10u": "m s**-1", "2t": "K"}
    grid = make_grid(load_config(argv[0], argv[1:-1]).grid.hr)
    index = store_cells_for_grid(hr, grid, "the HR store", "")
    np.testing.assert_array_equal(index, grid.native_index)  # GRIB's order is the native one
    np.testing.assert_allclose(hr.read(slice(None), ["2t"], cells=index)[:, 0, 0],
                               fields(grid.latitudes, grid.longitudes, True)["2t"], rtol=1e-6)

    # only weather datasets: the static fields come from ETOPO5 on O16
    assert main(["data", "check", *argv]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["data", "forcings", *argv]) == 0
    assert main(["data", "check", *argv]) == 0, capsys.readouterr().err
    assert "data check passed" in capsys.readouterr().out
    assert main(["train", *argv]) == 0, capsys.readouterr().err
    assert main(["sample", *argv]) == 0, capsys.readouterr().err

    path = tmp_path / "run" / "ensemble.zarr"
    values = EnsembleStore.open(path).read()
    data, meta = anemoi.read(path, tmp_path)
    assert meta["shape"] == [4, 2, 1, 1600] and meta["resolution"] == "O16"
    np.testing.assert_array_equal(data["data"], values)
    assert meta["variables_metadata"]["2t"]["units"] == "K"
    assert meta["variables_metadata"]["2t"]["standard_name"] == "air_temperature"  # CF table
