"""Semantic checks on a typed config: ranges and consistency the type system cannot express.

Each failure is one `ConfigError` line naming the key, the bad value and what is allowed.
Grid names and areas are checked by the grid builders themselves (`hpcds.grids`).
"""

from __future__ import annotations

from hpcds.config.schema import HpcdsConfig, StaticSource
from hpcds.errors import ConfigError

# Variables the benchmark knows how to generate; real stores may carry any names.
BENCHMARK_VARIABLES = ("2t", "10u", "10v", "msl", "tp")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"bad value {value!r} for config key {key!r}: expected {allowed}")


def validate(cfg: HpcdsConfig) -> None:
    d, b = cfg.data, cfg.benchmark
    _require(len(d.variables) > 0, "data.variables", d.variables, "at least one variable")
    _require(len(set(d.variables)) == len(d.variables), "data.variables", d.variables,
             "distinct variable names")
    _require(-1.0 <= d.min_correlation <= 1.0, "data.min_correlation", d.min_correlation,
             "a number in [-1, 1]")
    _require(d.max_bias >= 0, "data.max_bias", d.max_bias, "a number >= 0")
    _require(d.check_dates >= 1, "data.check_dates", d.check_dates, "an integer >= 1")
    for name, eps in d.log_transform.items():
        _require(0 <= eps < float("inf"), f"data.log_transform.{name}", eps,
                 "an offset ε > 0 in the variable's units (log1p(x/ε)), or 0 for none")
    st = d.static
    for key in ("orography", "land_sea_mask"):
        name = getattr(st, key)
        _require(bool(name.strip()) and name == name.strip(), f"data.static.{key}", name,
                 "the name of a variable in the store data.static.source names")
    _require(st.land_sea_mask != st.orography, "data.static.land_sea_mask", st.land_sea_mask,
             f"another variable than data.static.orography={st.orography!r}")
    if st.source is StaticSource.hr_store:
        for key in ("orography", "land_sea_mask"):
            _require(getattr(st, key) not in d.variables, f"data.static.{key}",
                     getattr(st, key), "a time-constant field of data.hr_store, not one of "
                     f"the modelled data.variables {list(d.variables)}")
    _require(b.n_dates >= 1, "benchmark.n_dates", b.n_dates, "an integer >= 1")
    _require(b.frequency_hours >= 1, "benchmark.frequency_hours", b.frequency_hours,
             "an integer >= 1")
    _require(b.noise_slope > 0, "benchmark.noise_slope", b.noise_slope, "a number > 0")
    _require(b.noise_modes >= 16, "benchmark.noise_modes", b.noise_modes, "an integer >= 16")
    _require(b.tail_strength >= 0, "benchmark.tail_strength", b.tail_strength, "a number >= 0")
    _require(b.chunk_cells >= 1, "benchmark.chunk_cells", b.chunk_cells, "an integer >= 1")
    for key, value in (("grid.knn", cfg.grid.knn), ("model.encoder_knn", cfg.model.encoder_knn),
                       ("model.decoder_knn", cfg.model.decoder_knn),
                       ("model.refiner_knn", cfg.model.refiner_knn)):
        _require(value >= 1, key, value, "an integer >= 1")
    _require(cfg.model.graph_block_rows >= 0, "model.graph_block_rows",
             cfg.model.graph_block_rows, "an integer >= 0 (0: all destination rows at once)")
    _require(cfg.profile.start_step >= 0, "profile.start_step", cfg.profile.start_step,
             "an integer >= 0")
    _require(cfg.profile.num_steps >= 0, "profile.num_steps", cfg.profile.num_steps,
             "an integer >= 0 (0: no capture window)")
    m = cfg.model
    _require(m.refiner_layers >= 0, "model.refiner_layers", m.refiner_layers,
             "an integer >= 0 (0: no HR-level refinement)")
    _require(m.hidden_dim % m.num_heads == 0, "model.hidden_dim", m.hidden_dim,
             f"a multiple of model.num_heads={m.num_heads}")
    _require(m.window >= 2 and m.window % 2 == 0, "model.window", m.window,
             "an even integer >= 2")
    df = cfg.diffusion
    _require(df.sigma_data > 0, "diffusion.sigma_data", df.sigma_data, "a number > 0")
    _require(0 < df.sigma_min < df.sigma_max, "diffusion.sigma_min", df.sigma_min,
             f"0 < sigma_min < sigma_max={df.sigma_max}")
    _require(df.noise_exponent > 0, "diffusion.noise_exponent", df.noise_exponent,
             "a number > 0")
    _require(0 < df.noise_floor <= 1, "diffusion.noise_floor", df.noise_floor,
             "a number in (0, 1]")
    t = cfg.training
    _require(t.steps >= 0, "training.steps", t.steps, "an integer >= 0")
    _require(t.batch_size >= 1, "training.batch_size", t.batch_size, "an integer >= 1")
    _require(0 <= t.ema_decay < 1, "training.ema_decay", t.ema_decay, "a number in [0, 1)")
    for key, ok, allowed in (
            ("grad_accumulation", t.grad_accumulation >= 1, "an integer >= 1"),
            ("log_every", t.log_every >= 1, "an integer >= 1"),
            ("val_every", t.val_every >= 0, "an integer >= 0 (0: only at the end)"),
            ("val_dates", t.val_dates >= 0, "an integer >= 0"),
            ("checkpoint_every", t.checkpoint_every >= 0, "an integer >= 0 (0: at the end)"),
            ("warmup_steps", t.warmup_steps >= 0, "an integer >= 0"),
            ("lr", t.lr > 0, "a number > 0"),
            ("lr_min", 0 <= t.lr_min <= t.lr, f"a number in [0, training.lr={t.lr}]"),
            ("weight_decay", t.weight_decay >= 0, "a number >= 0"),
            ("grad_clip", t.grad_clip >= 0, "a number >= 0 (0: no clipping)")):
        _require(ok, f"training.{key}", getattr(t, key), allowed)
    s = cfg.sampling
    _require(s.steps >= 1, "sampling.steps", s.steps, "an integer >= 1")
    _require(s.members >= 1, "sampling.members", s.members, "an integer >= 1")
    _require(s.members_per_batch >= 1, "sampling.members_per_batch", s.members_per_batch,
             "an integer >= 1")
    if df.variable_weights is not None:
        _require(len(df.variable_weights) == len(d.variables)
                 and all(w >= 0 for w in df.variable_weights), "diffusion.variable_weights",
                 df.variable_weights, f"{len(d.variables)} numbers >= 0 (one per data.variables)")
    e = cfg.evaluation
    _require(e.baseline_steps is None or e.baseline_steps >= 1, "evaluation.baseline_steps",
             e.baseline_steps, "an integer >= 1, or null for training.steps")
    _require(0 < e.crps_alpha <= 1, "evaluation.crps_alpha", e.crps_alpha, "a number in (0, 1]")
    _require(all(0 < q < 1 for q in e.quantiles), "evaluation.quantiles", e.quantiles,
             "numbers in (0, 1)")
    p = cfg.parallel
    _require(p.model_parallel >= 1, "parallel.model_parallel", p.model_parallel,
             "an integer >= 1")
    _require(p.ensemble_groups >= 0, "parallel.ensemble_groups", p.ensemble_groups,
             "an integer >= 0 (0: world size / model_parallel)")
    _require(p.zero_stage in (0, 1, 2, 3), "parallel.zero_stage", p.zero_stage, "0, 1, 2 or 3")
