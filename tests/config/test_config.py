"""Typed configs: YAML + overrides → validated dataclasses, one-line errors for bad input."""

import dataclasses

import pytest

from hpcds.config.load import load_config, preset_names, save_resolved, to_yaml
from hpcds.config.schema import HpcdsConfig, NanPolicy, Solver
from hpcds.errors import ConfigError
from hpcds.grids import make_grid


def test_tiny_preset_fills_the_schema():
    cfg = load_config("tiny")
    assert isinstance(cfg, HpcdsConfig)
    assert cfg.grid.hr.name == "0.125/0.125" and cfg.grid.hr.area == "alps"
    assert cfg.data.lr_store == "runs/tiny/data/lr.zarr"  # interpolation resolved
    assert cfg.data.nan_policy is NanPolicy.error
    assert cfg.sampling.solver is Solver.dpmpp_2m and cfg.sampling.steps == 40


def test_every_component_has_its_own_dataclass():
    names = {f.name for f in dataclasses.fields(HpcdsConfig)}
    assert {"data", "grid", "model", "diffusion", "training", "sampling", "evaluation",
            "parallel"} <= names
    cfg = load_config(None)
    for name in names:
        assert dataclasses.is_dataclass(getattr(cfg, name))


def test_overrides_take_precedence_and_are_typed():
    cfg = load_config("tiny", ["training.steps=7", "data.variables=[2t,tp]",
                               "run.out_dir=/tmp/x", "data.nan_policy=skip_date"])
    assert cfg.training.steps == 7
    assert cfg.data.variables == ["2t", "tp"]
    assert cfg.data.hr_store == "/tmp/x/data/hr.zarr"
    assert cfg.data.nan_policy is NanPolicy.skip_date


@pytest.mark.parametrize("override, expected", [
    ("data.foo=1", "unknown config key 'data.foo': data has keys lr_store, hr_store"),
    ("foo.bar=1", "unknown config key 'foo.bar': the top level has keys run, grid, data"),
    ("training.steps=abc", "bad value 'abc' for config key 'training.steps'"),
    ("data.nan_policy=bogus", "expected one of error, skip_date"),
    ("sampling.solver=euler", "expected one of heun, dpmpp_2m"),
    ("training.steps=-1", "expected an integer >= 0"),
    ("model.window=7", "expected an even integer >= 2"),
    ("steps", "is not key=value"),
    ("data.static.source=hr", "bad value 'hr' for config key 'data.static.source' in override "
                              "'data.static.source=hr': expected one of forcings_store, hr_store"),
    ("data.static.orography_quantity=m", "expected one of height, geopotential"),
    ('data.static.orography=""', "bad value '' for config key 'data.static.orography': expected "
                               "the name of a variable"),
    ("data.static.land_sea_mask=orog", "config key 'data.static.land_sea_mask': expected "
                                       "another variable than data.static.orography='orog'"),
    ("data.static.elevation=z", "unknown config key 'data.static.elevation': data.static has "
                                "keys source, orography, orography_quantity, land_sea_mask"),
])
def test_bad_overrides_are_one_line_errors(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_static_fields_from_the_hr_store_must_not_be_modelled_variables():
    cfg = load_config("tiny", ["data.static.source=hr_store", "data.static.orography=z",
                               "data.static.orography_quantity=geopotential"])
    assert cfg.data.static.orography == "z" and cfg.data.static.land_sea_mask == "lsm"
    with pytest.raises(ConfigError, match=r"^bad value '2t' for config key "
                                          r"'data.static.orography': expected a time-constant "
                                          r"field of data.hr_store, not one of the modelled"):
        load_config("tiny", ["data.static.source=hr_store", "data.static.orography=2t"])


def test_unknown_key_in_yaml_names_file_key_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  lr_stor: x.zarr\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    msg = str(err.value)
    assert "'data.lr_stor'" in msg and str(path) in msg and "lr_store" in msg


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("benchmark:\n  n_dates: many\n")
    with pytest.raises(ConfigError, match="benchmark.n_dates.*expected a value of type int"):
        load_config(str(path))


def test_wrong_type_in_a_map_names_the_entry_type():
    """One entry of a map (data.log_transform.tp) expects the map's value type, the whole map
    a map; neither is described as a Dict."""
    with pytest.raises(ConfigError, match=r"'data.log_transform.tp'.*expected a value of "
                                          r"type float$"):
        load_config("tiny", ["data.log_transform.tp=abc"])
    with pytest.raises(ConfigError, match=r"'data.log_transform'.*expected a map "
                                          r"\{name: float\}$"):
        load_config("tiny", ["data.log_transform=abc"])


def test_missing_config_lists_presets():
    with pytest.raises(ConfigError, match="presets .*tiny"):
        load_config("no_such_config")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("tiny", ["training.steps=3"])
    saved = save_resolved(cfg, tmp_path)
    again = load_config(str(saved))
    assert to_yaml(again) == to_yaml(cfg)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary behind


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_validates_and_its_grids_build(preset):
    cfg = load_config(preset)
    hr, lr = make_grid(cfg.grid.hr), make_grid(cfg.grid.lr)
    assert hr.size > lr.size > 0
    assert make_grid(cfg.model.hidden_grid).size > 0
