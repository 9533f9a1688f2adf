"""Typed configuration: one dataclass per component.

YAML only fills these (``OmegaConf.structured`` + merge, see ``load.py``); a key that is not a
field here is an error listing the valid keys, and a value of the wrong type or outside its
enum is an error listing the valid values. Semantic checks (ranges, consistency between
components) live in ``validate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional


class NanPolicy(Enum):
    error = "error"  # any NaN in a checked/used date is an error naming variable and date
    skip_date = "skip_date"  # dates with NaNs are dropped and reported


class Backend(Enum):
    reference = "reference"
    triton = "triton"
    native = "native"
    auto = "auto"  # the fastest available here, per op: on a GPU triton then native, on a CPU native


class SigmaRegime(Enum):
    lognormal = "lognormal"  # EDM training: ln σ ~ N(P_mean, P_std²)
    karras_uniform = "karras_uniform"  # high-noise fine-tuning: σ uniform on the Karras ramp


class NoiseKind(Enum):
    white = "white"  # EDM: n ~ N(0, σ² I)
    # n ~ N(0, σ² L Lᵀ), L coloured like the training residuals' DCT spectrum (limited-area
    # rasters): hpcds/diffusion/noise_shape.py
    residual_spectrum = "residual_spectrum"


class Solver(Enum):
    heun = "heun"  # EDM Heun 2nd order with churn
    dpmpp_2m = "dpmpp_2m"  # DPM-Solver++(2M)


class Schedule(Enum):
    karras = "karras"
    piecewise = "piecewise"


class HaloTransport(Enum):
    torch = "torch"  # torch.distributed point-to-point (NCCL on GPU, gloo on CPU)
    mpi = "mpi"  # mpi4py


@dataclass
class RunConfig:
    out_dir: str = "runs/tiny"  # every output of a run goes below this directory
    seed: int = 0


@dataclass
class GridConfig:
    """One grid. `name`: "O<N>" (octahedral reduced Gaussian), "<dlat>/<dlon>" (regular
    lat-lon, degrees). `area`: "global", a named region ("alps", "himalaya") or "N/W/S/E" in
    degrees. `rotated_pole`: [lat, lon] of the rotated north pole for a rotated limited-area
    grid (then `area` is in rotated coordinates). `margin_deg` widens a regional area."""

    name: str = "O96"
    area: str = "global"
    rotated_pole: Optional[List[float]] = None
    margin_deg: float = 0.0


@dataclass
class GridsConfig:
    hr: GridConfig = field(default_factory=lambda: GridConfig(name="O96"))
    lr: GridConfig = field(default_factory=lambda: GridConfig(name="O24"))
    cache_dir: str = "${run.out_dir}/graphs"  # built graphs and interpolation matrices
    knn: int = 4  # neighbours per destination node in kNN graphs


class StaticSource(Enum):
    forcings_store = "forcings_store"  # data.forcings_store (`hpcds data forcings`, benchmark)
    hr_store = "hr_store"  # time-constant fields of data.hr_store (anemoi: constant_fields)


class OrographyQuantity(Enum):
    height = "height"  # surface height above sea level, m
    geopotential = "geopotential"  # surface geopotential, m² s⁻² (ERA5/IFS `z`): ÷ g = 9.80665


@dataclass
class StaticConfig:
    """The static HR fields the network is given (see hpcds/data/forcings.py): their names in
    the store they come from, and how to turn them into orography (m) and land fraction."""

    source: StaticSource = StaticSource.forcings_store
    orography: str = "orog"  # name of the orography variable in the source store
    orography_quantity: OrographyQuantity = OrographyQuantity.height
    land_sea_mask: str = "lsm"  # name of the land-sea mask (a land fraction in [0, 1])


@dataclass
class DataConfig:
    lr_store: str = "${run.out_dir}/data/lr.zarr"
    hr_store: str = "${run.out_dir}/data/hr.zarr"
    forcings_store: str = "${run.out_dir}/data/forcings.zarr"
    static: StaticConfig = field(default_factory=StaticConfig)
    variables: List[str] = field(default_factory=lambda: ["2t", "10u", "10v", "msl", "tp"])
    # variables whose values are >= 0 (precipitation): sampled members are clipped at 0 when
    # written (the network's residual can undershoot where the truth is exactly 0); names
    # not in `variables` are ignored (so `data.variables=[2t]` needs no second override)
    nonnegative: List[str] = field(default_factory=list)
    # variable → ε > 0 (its units): the model works in log1p(x/ε) for these (a multiplicative
    # small-scale variability, precipitation's, becomes additive; hpcds.data.transform).
    # Saved in the checkpoint's normalisation; names not in `variables` are ignored; ε = 0
    # turns a preset's transform off (data.log_transform.tp=0: an override merges into the map)
    log_transform: Dict[str, float] = field(default_factory=dict)
    start_date: Optional[str] = None  # ISO date; None = first common date
    end_date: Optional[str] = None  # ISO date, inclusive; None = last common date
    nan_policy: NanPolicy = NanPolicy.error
    # alignment check: coarse-grained HR vs LR, per variable, on `check_dates` dates
    min_correlation: float = 0.8  # of anomalies (w.r.t. the per-cell mean over checked dates)
    max_bias: float = 0.25  # |area-mean(coarse(HR) - LR)| in units of the LR standard deviation
    check_dates: int = 8
    stats_file: str = "${run.out_dir}/data/statistics.json"


@dataclass
class BenchmarkConfig:
    """The synthetic pair with a known p(HR | LR) on real terrain (grids from `grid`)."""

    start_date: str = "2026-01-01T00:00"
    n_dates: int = 40
    frequency_hours: int = 6
    seed: int = 1
    terrain_file: str = "/usr/share/ferret-vis/data/etopo5.cdf"  # Debian ferret-datasets
    noise_slope: float = 3.0  # power-law slope β of the fine-scale noise spectrum, E(k) ∝ k^-β
    noise_modes: int = 1024  # random Fourier modes per noise field
    tail_strength: float = 0.3  # sinh-arcsinh tail parameter: 0 = Gaussian, > 0 heavier tails
    chunk_cells: int = 4096  # zarr chunk size along cells


@dataclass
class ModelConfig:
    """The graph encoder–processor–decoder F_θ (see hpcds/models/downscaler.py)."""

    hidden_dim: int = 64  # channels of every block
    num_heads: int = 4
    processor_layers: int = 2
    window: int = 64  # sliding-window attention width over SFC-ordered hidden nodes (even)
    mlp_ratio: float = 2.0  # MLP hidden width / hidden_dim
    noise_embedding_dim: int = 64  # Fourier features of c_noise
    hidden_grid: GridConfig = field(default_factory=lambda: GridConfig(name="O48"))
    encoder_knn: int = 4  # each HR node sends to its nearest encoder_knn hidden nodes
    decoder_knn: int = 4  # each HR node receives from its nearest decoder_knn hidden nodes
    refiner_layers: int = 1  # graph-attention blocks over HR→HR neighbours after the decoder
    refiner_knn: int = 8  # each HR node attends to its refiner_knn nearest HR nodes (itself too)
    # EDM's skip term through a learned σ-conditioned local linear filter over the refiner's
    # HR neighbours, D = c_skip·S_σ(x) + c_out·F (hpcds/nn/skip_filter.py): removes the
    # grid-scale noise that F alone left (the white-noise floor of issue 12)
    skip_filter: bool = False
    backend: Backend = Backend.reference  # kernels for graph attention / window attention / LN
    # checkpoint every block (encoder, processor, decoder, refiner): keep only the blocks'
    # inputs, recompute one block at a time in backward (its halo exchange included)
    activation_checkpointing: bool = False
    # graph-attention blocks run their destination rows in pieces of this many rows, each
    # checkpointed under autograd (0: all rows at once): a recomputed HR block then holds its
    # keys/values and one piece's activations, not all rows'
    graph_block_rows: int = 0
    # torch.compile the network (inductor, one graph: fullgraph, halo exchanges included) for
    # training and sampling; an execution choice like `backend` (see hpcds/models/compile.py)
    compile: bool = False


@dataclass
class DiffusionConfig:
    """EDM (Karras et al. 2022) in the paper's symbols; see hpcds/diffusion."""

    sigma_data: float = 1.0  # targets are normalised residuals: unit variance
    P_mean: float = -1.2  # ln σ ~ N(P_mean, P_std²) during training (regime: lognormal)
    P_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0  # up to 1e5 for the high-noise fine-tuning regime
    rho: float = 7.0
    regime: SigmaRegime = SigmaRegime.lognormal
    deterministic: bool = False  # regression of the conditional mean (debug mode)
    variable_weights: Optional[List[float]] = None  # per-variable loss weights; None = all 1
    noise: NoiseKind = NoiseKind.white  # the forward process's noise (white: EDM's)
    noise_exponent: float = 1.0  # residual_spectrum: a(k)² ∝ max(P(k)/P̄, floor)^exponent
    noise_floor: float = 1.0e-4
    # residual_spectrum: measure the spectrum of the residual's part that a per-node linear
    # model of the LR input does not explain (its stochastic part), not of the whole residual
    # (demo, 1500 steps: high-k excess 2.16 -> 1.65, 10u 1.70 -> 1.13, 10v 3.40 -> 1.58)
    noise_detrend: bool = True


@dataclass
class TrainingConfig:
    steps: int = 200
    batch_size: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20  # linear warm-up, then cosine decay to lr_min at `steps`
    lr_min: float = 1e-6
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    grad_accumulation: int = 1
    val_every: int = 50
    val_dates: int = 4  # the last val_dates dates are held out for validation
    checkpoint_every: int = 100
    log_every: int = 10
    run_dir: str = "${run.out_dir}/train"  # checkpoints, metrics.jsonl, config.yaml
    resume: bool = True  # continue from run_dir's latest checkpoint when there is one
    init_from: Optional[str] = None  # fine-tune: load weights (and EMA) from this checkpoint


@dataclass
class SamplingConfig:
    # DPM-Solver++(2M), 40 steps: the solver error at the smallest scales is within 5 % (an
    # exact-denoiser test, diffusion/samplers.py SPECTRUM_MIN_STEPS) for 40 network
    # evaluations, what Heun's 20 steps cost (Heun at 20 adds 14 % there)
    solver: Solver = Solver.dpmpp_2m
    schedule: Schedule = Schedule.karras
    steps: int = 40
    members: int = 8
    members_per_batch: int = 4
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = 1e9
    S_noise: float = 1.0
    piecewise_split: float = 1.0  # piecewise schedule: σ above this gets few steps...
    piecewise_high_fraction: float = 0.25  # ...this fraction of them; the rest go below it
    seed: int = 0
    checkpoint: Optional[str] = None  # default: the training run's latest checkpoint
    use_ema: bool = True
    output: str = "${run.out_dir}/ensemble.zarr"


@dataclass
class EvaluationConfig:
    crps_alpha: float = 0.95  # Anemoi's almost-fair CRPS
    quantiles: List[float] = field(default_factory=lambda: [0.99, 0.999, 0.9999])
    bootstrap: int = 200
    terrain_mask_m: float = 1500.0
    # training steps of the deterministic (conditional-mean) baseline `hpcds demo` trains beside
    # the diffusion model; None: training.steps
    baseline_steps: Optional[int] = None


@dataclass
class ParallelConfig:
    model_parallel: int = 1  # ranks per model instance (HR graph shards)
    ensemble_groups: int = 0  # data-parallel / ensemble groups; 0: world / model_parallel
    halo_transport: HaloTransport = HaloTransport.torch
    zero_stage: int = 0
    use_deepspeed: bool = False


@dataclass
class ProfileConfig:
    """Nsight capture window (launch/profile.sh sets these): on a GPU the trainer calls
    cudaProfilerStart before optimizer step `start_step` and cudaProfilerStop after
    `num_steps` steps (nsys --capture-range=cudaProfilerApi); 0 steps = no window."""

    start_step: int = 10
    num_steps: int = 0


@dataclass
class HpcdsConfig:
    run: RunConfig = field(default_factory=RunConfig)
    grid: GridsConfig = field(default_factory=GridsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
