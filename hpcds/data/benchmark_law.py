r"""The synthetic benchmark's law: a known conditional distribution p(HR | LR) on real terrain.

Notation. I (n_hr, n_lr): `interpolation_matrix(LR, HR)` (bilinear, rows sum to 1);
C (n_lr, n_hr): `coarsening_matrix(HR, LR)`; φ, λ latitude/longitude (rad); t seconds since
2000-01-01; R the Earth radius; z_HR the HR orography (ETOPO surface height, ≥ 0 m);
z_LR = C z_HR on LR cells covered by the HR grid (ETOPO at the LR spacing elsewhere);
z' = z_HR − I z_LR the fine-scale terrain; l_LR the LR land fraction (same construction).

Large scale (LR grid, analytic, deterministic given `benchmark.seed`)
    ψ   = ψ_jet(φ) + Σ_j A_j cos²φ e^{−((φ−φ_j)/w_j)²} cos(m_j λ − ω_j t + α_j)
          (5 travelling waves per hemisphere: |φ_j| 35–60°, w_j 8–14°, m_j ∈ 4..12, phase
          speeds 6–16 m/s, |10v| 2.5–6 m/s at φ_j, so anomalies decorrelate within about a day;
          ψ_jet: westerly jets U₀ = 6 m/s at ±45°, 15° wide)
    10u = −(1/R) ∂ψ/∂φ,   10v = (1/(R cos φ)) ∂ψ/∂λ          (non-divergent, exact derivatives)
    msl = p₀ + ρ f(φ) ψ,  f = 2Ω sin φ, ρ = 1.2 kg/m³          (geostrophic-ish)
    2t  = 302 K − 40 K sin²φ − 12 K sin φ cos(2π(doy − 15)/365.25)     (climate + season)
          + (0.5 K + 3 K·l_LR) cos(2π(h_local − 15 h)/24 h)           (diurnal, larger on land)
          + κ·10v + Θ − γ z_LR                   (advection κ = 0.4 K/(m/s), waves Θ, lapse)
    tp  = P₀ (Δt/6 h) max(q, 0)²,  q = 10v/(6 m/s) + χ − 0.3,  P₀ = 3 mm
Θ (2–4 K) and χ (0.4–0.8) are 4 more travelling waves per hemisphere each, with amplitude
envelopes (cos φ/cos φ_j)² e^{−((φ−φ_j)/w_j)²}. The LR state is rounded to float32 (what the LR
store holds) before anything below uses it, so the law conditions on exactly the stored values.

Fine scale (HR cells), with x̃ = I x_LR and g independent unit Gaussian noise fields (one per
variable):
    2t  = x̃_2t − γ z' + σ_T S_τ(g)                  σ_T = 0.4 K + 0.8 K/km·|z'|
    10u = x̃_u (1 + α tanh(z'/h₀)) + σ_w S_τ(g)      σ_w = 0.3 m/s + 0.1·|(x̃_u, x̃_v)|
    10v = x̃_v (1 + α tanh(z'/h₀)) + σ_w S_τ(g)
    msl = x̃_msl + σ_p S_τ(g)                         σ_p = 30 Pa
    tp  = x̃_tp m(z') exp(s g − s²/2)                 m = 1 + μ tanh(z'/h₀), s = 0.6
(γ = 6.5 K/km, α = 0.3, μ = 0.5, h₀ = 500 m). So E[HR | LR] is x̃ with −γz' on 2t, the speed-up
factor on the winds and m(z') on tp, and sd[HR | LR] is σ_T, σ_w, σ_w, σ_p and
E[tp | LR]·√(e^{s²} − 1). tp ≥ 0, exactly 0 where x̃_tp = 0; the lognormal factor has unit
mean and makes tp heavy-tailed (kurtosis e^{4s²} + 2e^{3s²} + 3e^{2s²} − 3) at any τ.

Heavy tails: S_τ(z) = sinh(a asinh z)/√V(a), a = 1 + τ (τ = `benchmark.tail_strength`), the
symmetric sinh-arcsinh transform (Jones & Pewsey 2009) normalised to zero mean, unit variance:
V(a) = (P(2a) − 1)/2, P(q) = e^{1/4}(8π)^{−1/2}[K_{(q+1)/2}(1/4) + K_{(q−1)/2}(1/4)] (K: modified
Bessel function); its kurtosis is (P(4a) − 4P(2a) + 3)/(8V²).

Noise field: g(x) = Σ_{m<M} w_m r_m cos(k_m·x + α_m), M = `benchmark.noise_modes`, r_m
Rayleigh, α_m uniform (i.e. Gaussian cos/sin coefficients), so g(x) ~ N(0, 1) *exactly* at every
point. |k| ∈ [π/Δ_LR, π/Δ_HR] (wavelengths shorter than 2 LR spacings, down to the HR Nyquist)
is cut into M strata of equal log-width; stratum m gets w_m² = its share of ∫E(k)dk,
E(k) ∝ k^−β (β = `benchmark.noise_slope`), and k_m is drawn from E restricted to the stratum,
so the expected spectrum is exactly ∝ k^−β on the band while every scale gets modes. x is the
position in the tangent plane at the HR domain's centre (orthographic, metres) for regional
grids, R·(unit vector) in 3-D for global ones (directions uniform on the circle/sphere).
On the sphere a 3-D plane wave's local wavenumber is |k| sin θ (θ: angle between k and the
local vertical), so global noise also has some power at wavelengths longer than 2 Δ_LR; the
spectrum is exact only for regional grids.
A field is a function of its key only — (seed, stream, sub-seed, date index, variable, member)
→ `np.random.default_rng` — and is evaluated pointwise, so any cell subset (a shard) gets
exactly the slice of the full field. The truth uses stream 0, the oracle stream 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import erf, kv

from hpcds.grids.geometry import EARTH_RADIUS_M, Grid

VARIABLES = ("2t", "10u", "10v", "msl", "tp")
UNITS = {"2t": "K", "10u": "m s-1", "10v": "m s-1", "msl": "Pa", "tp": "m"}
STREAM_TRUTH, STREAM_ORACLE, STREAM_LARGE_SCALE = 0, 1, 2
EPOCH = np.datetime64("2000-01-01T00:00:00", "s")
OMEGA = 7.292115e-5  # Earth's rotation, rad/s
LAPSE_RATE = 6.5e-3  # γ, K/m: the standard atmosphere's
_CHUNK_ELEMENTS = 1 << 16  # cells × modes evaluated at once (temporaries stay in cache)


# ----------------------------------------------------------------------------- tails
def _bessel_moment(q: float) -> float:
    """P(q) = E[cosh(q asinh Z)], Z ~ N(0, 1) (Jones & Pewsey 2009)."""
    return float(np.exp(0.25) / np.sqrt(8 * np.pi) * (kv((q + 1) / 2, 0.25)
                                                     + kv((q - 1) / 2, 0.25)))


def sinh_arcsinh_variance(tail_strength: float) -> float:
    """Var[sinh(a asinh Z)], a = 1 + tail_strength, Z ~ N(0, 1)."""
    return (_bessel_moment(2 * (1 + tail_strength)) - 1) / 2


def sinh_arcsinh_kurtosis(tail_strength: float) -> float:
    """Kurtosis (3 for a Gaussian) of sinh(a asinh Z), a = 1 + tail_strength."""
    a = 1 + tail_strength
    fourth = (_bessel_moment(4 * a) - 4 * _bessel_moment(2 * a) + 3) / 8
    return fourth / sinh_arcsinh_variance(tail_strength) ** 2


def heavy_tail(z: np.ndarray, tail_strength: float) -> np.ndarray:
    """S_τ(z): zero-mean, unit-variance sinh-arcsinh transform of N(0, 1) values (n,)."""
    if tail_strength == 0:
        return z
    a = 1 + tail_strength
    return np.sinh(a * np.arcsinh(z)) / np.sqrt(sinh_arcsinh_variance(tail_strength))


# ----------------------------------------------------------------------------- noise
@dataclass(frozen=True, eq=False)
class NoiseSpace:
    """Where noise fields live: positions (n_hr, d) in metres (d = 2: tangent plane of a
    regional grid, d = 3: R·unit vectors of a global one) and the band [k_min, k_max] (rad/m)
    with power-law slope `slope` and `modes` Fourier modes per field."""

    positions: np.ndarray
    k_min: float
    k_max: float
    slope: float
    modes: int

    @classmethod
    def for_grid(cls, grid: Grid, lr_spacing_m: float, hr_spacing_m: float, slope: float,
                 modes: int) -> "NoiseSpace":
        """k_min = π/Δ_LR (wavelength 2 LR spacings), k_max = π/Δ_HR (the HR Nyquist), from
        typical spacings in metres. A regional grid within 60° of its centre uses its tangent
        plane (distortion < 1 − cos 60° there); wider ones, like global grids, use 3-D
        positions, since the orthographic projection folds beyond 90°."""
        xyz = grid.unit_vectors()
        plane = tangent_plane(xyz) if not grid.is_global else None
        if plane is not None and plane[1] >= np.cos(np.deg2rad(60.0)):
            positions = EARTH_RADIUS_M * plane[0]
        else:
            positions = EARTH_RADIUS_M * xyz
        return cls(positions, np.pi / lr_spacing_m, np.pi / hr_spacing_m, float(slope),
                   int(modes))


def tangent_plane(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Orthographic (east, north) coordinates (n, 2), on the unit sphere, of unit vectors
    (n, 3) in the plane tangent at their normalised mean c, and min(x·c) (the cosine of the
    largest angle from c)."""
    centre = xyz.mean(axis=0)
    norm = np.linalg.norm(centre)
    if norm < 1e-9:  # points all around the sphere: no tangent plane fits
        return np.zeros((xyz.shape[0], 2)), -1.0
    centre /= norm
    lon0 = np.arctan2(centre[1], centre[0])
    lat0 = np.arcsin(centre[2])
    east = np.array([-np.sin(lon0), np.cos(lon0), 0.0])
    north = np.array([-np.sin(lat0) * np.cos(lon0), -np.sin(lat0) * np.sin(lon0), np.cos(lat0)])
    return np.stack([xyz @ east, xyz @ north], axis=-1), float((xyz @ centre).min())


def _power_law_integral(a: np.ndarray, b: np.ndarray, slope: float) -> np.ndarray:
    """∫_a^b k^−slope dk, elementwise."""
    if abs(slope - 1.0) < 1e-9:
        return np.log(b / a)
    return (b ** (1 - slope) - a ** (1 - slope)) / (1 - slope)


def _power_law_quantile(a: np.ndarray, b: np.ndarray, u: np.ndarray, slope: float
                        ) -> np.ndarray:
    """Inverse CDF of the density ∝ k^−slope on [a, b] at u ∈ [0, 1)."""
    if abs(slope - 1.0) < 1e-9:
        return a * (b / a) ** u
    p = 1 - slope
    return (a ** p + u * (b ** p - a ** p)) ** (1 / p)


def draw_modes(rng: np.random.Generator, space: NoiseSpace
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random modes of one field: wavevectors (M, d) rad/m, phases (M,), amplitudes (M,) with
    E[Σ amplitude²/2] = 1 (see the module docstring: stratified in log|k|)."""
    m, dim = space.modes, space.positions.shape[1]
    edges = space.k_min * (space.k_max / space.k_min) ** (np.arange(m + 1) / m)
    energy = _power_law_integral(edges[:-1], edges[1:], space.slope)
    weights = np.sqrt(energy / energy.sum())
    k = _power_law_quantile(edges[:-1], edges[1:], rng.random(m), space.slope)
    if dim == 2:
        angle = rng.uniform(0.0, 2 * np.pi, m)
        direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    else:
        direction = rng.standard_normal((m, 3))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    phase = rng.uniform(0.0, 2 * np.pi, m)
    amplitude = weights * rng.rayleigh(1.0, m)
    return k[:, None] * direction, phase, amplitude


def evaluate_modes(positions: np.ndarray, wavevectors: np.ndarray, phase: np.ndarray,
                   amplitude: np.ndarray) -> np.ndarray:
    """Σ_m amplitude_m cos(k_m·x + phase_m) at positions (n, d) → (n,) float64.

    Every cell is computed on its own with elementwise operations and a fixed-order sum over
    modes (no BLAS, whose blocking could depend on how many cells are asked for), so a shard
    gets bit-for-bit the slice of the full field.

    Precision: the phase is formed and reduced to [−π, π] in float64, then its cosine is
    taken in float32, whose vectorised cosine is ~7× faster than float64's (libm); the error
    per mode is < 3e-7, below the float32 resolution the values are stored with, and the sum
    over modes is accumulated in float64.
    """
    n, m = positions.shape[0], wavevectors.shape[0]
    out = np.empty(n, dtype=np.float64)
    cycles_per_m = wavevectors / (2 * np.pi)  # (M, d)
    phase_cycles = phase / (2 * np.pi)
    step = max(1, _CHUNK_ELEMENTS // max(1, m))
    # buffers reused across chunks: the work is a dozen memory passes, allocation would double it
    cycles_buf, tmp_buf = np.empty((step, m)), np.empty((step, m))
    cos_buf = np.empty((step, m), dtype=np.float32)
    for start in range(0, n, step):
        pos = positions[start:start + step]
        rows = pos.shape[0]
        cycles, tmp, cos = cycles_buf[:rows], tmp_buf[:rows], cos_buf[:rows]
        np.multiply(pos[:, :1], cycles_per_m[:, 0], out=cycles)
        cycles += phase_cycles
        for axis in range(1, pos.shape[1]):
            np.multiply(pos[:, axis:axis + 1], cycles_per_m[:, axis], out=tmp)
            cycles += tmp
        np.rint(cycles, out=tmp)
        cycles -= tmp  # fractional cycle in [−0.5, 0.5]
        np.multiply(cycles, 2 * np.pi, out=cos, casting="same_kind")
        np.cos(cos, out=cos)
        np.multiply(cos, amplitude, out=tmp)  # float64
        tmp.sum(axis=1, out=out[start:start + rows])
    return out


def noise_key(seed: int, stream: int, sub_seed: int, date_index: int, variable: int,
              member: int) -> list[int]:
    """The `np.random.default_rng` seed of one noise field (SeedSequence entropy)."""
    return [int(seed), int(stream), int(sub_seed), int(date_index), int(variable), int(member)]


# ----------------------------------------------------------------------------- large scale
@dataclass(frozen=True, eq=False)
class Waves:
    """Travelling waves A cos²φ e^{−((φ−φ_c)/w)²} cos(m λ − ω t + α); arrays (n_waves,)."""

    amplitude: np.ndarray
    centre: np.ndarray  # rad
    width: np.ndarray  # rad
    wavenumber: np.ndarray
    omega: np.ndarray  # rad/s
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, per_hemisphere: int,
             amplitude_range: tuple[float, float]) -> "Waves":
        """`per_hemisphere` waves in each hemisphere with amplitudes uniform in
        `amplitude_range` (their meaning is the caller's: see `LargeScale.draw`)."""
        n = 2 * per_hemisphere
        hemisphere = np.repeat([1.0, -1.0], per_hemisphere)
        centre = np.deg2rad(hemisphere * rng.uniform(35.0, 60.0, n))
        width = np.deg2rad(rng.uniform(8.0, 14.0, n))
        wavenumber = rng.integers(4, 13, n).astype(np.float64)
        speed = rng.uniform(6.0, 16.0, n)
        omega = wavenumber * speed / (EARTH_RADIUS_M * np.cos(centre))
        amplitude = rng.uniform(*amplitude_range, n)
        return cls(amplitude, centre, width, wavenumber, omega, rng.uniform(0, 2 * np.pi, n))

    def terms(self, lat: np.ndarray, lon: np.ndarray, t: float):
        """(g, envelope cos²φ·g, d envelope/dφ, cos θ, sin θ), each (n_cells, n_waves), with
        g = e^{−((φ−φ_c)/w)²} and θ = m λ − ω t + α; lat/lon in radians."""
        d = (lat[:, None] - self.centre) / self.width
        gauss = np.exp(-d * d)
        cos_lat, sin_lat = np.cos(lat)[:, None], np.sin(lat)[:, None]
        envelope = cos_lat ** 2 * gauss
        d_envelope = gauss * (-2 * cos_lat * sin_lat - cos_lat ** 2 * 2 * d / self.width)
        theta = self.wavenumber * lon[:, None] - self.omega * t + self.phase
        return gauss, envelope, d_envelope, np.cos(theta), np.sin(theta)


@dataclass(frozen=True, eq=False)
class LargeScale:
    """The analytic LR state (see the module docstring); `psi_waves` amplitudes are in m²/s."""

    psi_waves: Waves
    temperature_waves: Waves
    moisture_waves: Waves
    jet_speed: float = 6.0  # m/s
    jet_lat: float = np.deg2rad(45.0)
    jet_width: float = np.deg2rad(15.0)
    p0: float = 101325.0  # Pa
    rho: float = 1.2  # kg/m³
    advection_k_per_ms: float = 0.4  # κ: 2t anomaly per m/s of southerly wind
    lapse_rate: float = LAPSE_RATE
    precip_scale_m: float = 3.0e-3  # P₀, per 6 h

    @classmethod
    def draw(cls, seed: int) -> "LargeScale":
        rng = np.random.default_rng([int(seed), STREAM_LARGE_SCALE])
        psi = Waves.draw(rng, 5, (2.5, 6.0))  # |10v| at φ_c in m/s, converted to m²/s:
        # v = A m cos φ_c / R at the envelope's centre
        psi = Waves(psi.amplitude * EARTH_RADIUS_M / (psi.wavenumber * np.cos(psi.centre)),
                    psi.centre, psi.width, psi.wavenumber, psi.omega, psi.phase)
        temperature = Waves.draw(rng, 4, (2.0, 4.0))  # Θ, K
        moisture = Waves.draw(rng, 4, (0.4, 0.8))  # χ, dimensionless
        return cls(psi, temperature, moisture)

    def flow(self, lat: np.ndarray, lon: np.ndarray, t: float):
        """(ψ m²/s, u m/s, v m/s), each (n,), at lat/lon in radians, t in s since EPOCH."""
        w = self.psi_waves
        gauss, envelope, d_envelope, cos_t, sin_t = w.terms(lat, lon, t)
        a = self.jet_speed * self.jet_width * np.sqrt(np.pi) / 2
        psi_jet = -EARTH_RADIUS_M * a * (erf((lat - self.jet_lat) / self.jet_width)
                                         + erf((lat + self.jet_lat) / self.jet_width))
        u_jet = self.jet_speed * (np.exp(-((lat - self.jet_lat) / self.jet_width) ** 2)
                                  + np.exp(-((lat + self.jet_lat) / self.jet_width) ** 2))
        psi = psi_jet + (w.amplitude * envelope * cos_t).sum(axis=1)
        u = u_jet - (w.amplitude * d_envelope * cos_t).sum(axis=1) / EARTH_RADIUS_M
        # (1/(R cos φ)) ∂/∂λ of A cos²φ g cos θ = −A m cos φ g sin θ / R  (regular at the poles)
        gauss_cos = np.cos(lat)[:, None] * gauss
        v = -(w.amplitude * w.wavenumber * gauss_cos * sin_t).sum(axis=1) / EARTH_RADIUS_M
        return psi, u, v

    @staticmethod
    def scalar_waves(w: Waves, lat: np.ndarray, lon: np.ndarray, t: float) -> np.ndarray:
        """Σ_j A_j (cos φ / cos φ_j)² e^{−((φ−φ_j)/w_j)²} cos θ_j (n,): amplitude A_j at φ_j."""
        _, envelope, _, cos_t, _ = w.terms(lat, lon, t)
        return (w.amplitude * envelope / np.cos(w.centre) ** 2 * cos_t).sum(axis=1)

    def state(self, lat_deg: np.ndarray, lon_deg: np.ndarray, date: np.datetime64,
              orography: np.ndarray, land: np.ndarray, step_hours: float) -> np.ndarray:
        """(n_var, n) float64: the LR state at cells (n,) with LR orography/land fraction."""
        lat, lon = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
        t = float((np.datetime64(date, "s") - EPOCH) / np.timedelta64(1, "s"))
        psi, u, v = self.flow(lat, lon, t)
        msl = self.p0 + self.rho * 2 * OMEGA * np.sin(lat) * psi
        doy = (np.datetime64(date, "s") - np.datetime64(date, "Y")) / np.timedelta64(1, "D")
        local_hours = (t / 3600.0 + lon_deg / 15.0) % 24.0
        t2m = (302.0 - 40.0 * np.sin(lat) ** 2
               - 12.0 * np.sin(lat) * np.cos(2 * np.pi * (doy - 15.0) / 365.25)
               + (0.5 + 3.0 * land) * np.cos(2 * np.pi * (local_hours - 15.0) / 24.0)
               + self.advection_k_per_ms * v + self.scalar_waves(self.temperature_waves, lat,
                                                                  lon, t)
               - self.lapse_rate * orography)
        q = v / 6.0 + self.scalar_waves(self.moisture_waves, lat, lon, t) - 0.3
        tp = self.precip_scale_m * step_hours / 6.0 * np.maximum(q, 0.0) ** 2
        return np.stack([t2m, u, v, msl, tp])


# ----------------------------------------------------------------------------- fine scale
@dataclass(frozen=True)
class FineScale:
    """Parameters of the HR conditional law (see the module docstring)."""

    lapse_rate: float = LAPSE_RATE
    t_noise_k: float = 0.4  # σ_T at z' = 0, K
    t_noise_per_m: float = 0.8e-3  # growth of σ_T with |z'|, K/m
    speedup: float = 0.3  # α
    terrain_scale_m: float = 500.0  # h₀
    wind_noise_ms: float = 0.3
    wind_noise_per_speed: float = 0.1
    msl_noise_pa: float = 30.0
    precip_enhancement: float = 0.5  # μ
    precip_log_std: float = 0.6  # s

    def conditional_mean(self, interp: np.ndarray, fine_orog: np.ndarray) -> np.ndarray:
        """E[HR | LR]: interp (n_var, n) = I x_LR on the cells, fine_orog (n,) = z'."""
        shape = np.tanh(fine_orog / self.terrain_scale_m)
        t2m, u, v, msl, tp = interp
        return np.stack([t2m - self.lapse_rate * fine_orog, u * (1 + self.speedup * shape),
                         v * (1 + self.speedup * shape), msl,
                         tp * (1 + self.precip_enhancement * shape)])

    def noise_scale(self, interp: np.ndarray, fine_orog: np.ndarray) -> np.ndarray:
        """(4, n): the scale multiplying S_τ(g) for 2t, 10u, 10v, msl."""
        speed = np.hypot(interp[1], interp[2])
        wind = self.wind_noise_ms + self.wind_noise_per_speed * speed
        return np.stack([self.t_noise_k + self.t_noise_per_m * np.abs(fine_orog), wind, wind,
                         np.full_like(speed, self.msl_noise_pa)])

    def conditional_std(self, interp: np.ndarray, fine_orog: np.ndarray) -> np.ndarray:
        """(n_var, n) closed-form conditional standard deviations."""
        mean_tp = self.conditional_mean(interp, fine_orog)[4]
        s = self.precip_log_std
        return np.concatenate([self.noise_scale(interp, fine_orog),
                               (mean_tp * np.sqrt(np.expm1(s * s)))[None]])

    def combine(self, interp: np.ndarray, fine_orog: np.ndarray, noise: np.ndarray,
                tail_strength: float) -> np.ndarray:
        """A sample (n_var, n) from unit Gaussian noise fields (n_var, n)."""
        mean = self.conditional_mean(interp, fine_orog)
        scale = self.noise_scale(interp, fine_orog)
        out = np.empty_like(mean)
        out[:4] = mean[:4] + scale * heavy_tail(noise[:4], tail_strength)
        s = self.precip_log_std
        out[4] = mean[4] * np.exp(s * noise[4] - s * s / 2)
        return out


@dataclass(eq=False)
class LawGeometry:
    """Grids, terrain and operators the law needs (all cells, SFC order).

    interp (n_hr, n_lr) csr; orog_hr/land_hr (n_hr,); orog_lr/land_lr (n_lr,);
    fine_orog (n_hr,) = orog_hr − interp @ orog_lr.
    """

    hr: Grid
    lr: Grid
    interp: sp.csr_matrix
    orog_hr: np.ndarray
    land_hr: np.ndarray
    orog_lr: np.ndarray
    land_lr: np.ndarray
    fine_orog: np.ndarray = field(init=False)

    def __post_init__(self):
        self.fine_orog = self.orog_hr - self.interp @ self.orog_lr


def cell_index(cells, n: int):
    """None → all, (a, b) → slice(a, b), or an index array (returned as int64)."""
    if cells is None:
        return slice(0, n)
    if isinstance(cells, tuple):
        return slice(int(cells[0]), int(cells[1]))
    return np.asarray(cells, dtype=np.int64)


@dataclass(eq=False)
class BenchmarkLaw:
    """p(HR | LR) of the benchmark plus the LR trajectory, on fixed grids and dates.

    geometry: grids, terrain, I;  dates (n_dates,) datetime64[s];  step_hours: Δt;
    seed: `benchmark.seed`;  noise: where noise fields live;  large_scale/fine: parameters.
    Arrays below: n_var = len(VARIABLES); n = number of requested HR cells.
    """

    geometry: LawGeometry
    dates: np.ndarray
    step_hours: float
    seed: int
    tail_strength: float
    noise: NoiseSpace
    large_scale: LargeScale
    fine: FineScale = field(default_factory=FineScale)
    variables: tuple[str, ...] = VARIABLES

    def lr_state(self, date_index: int) -> np.ndarray:
        """(n_var, n_lr) float64 holding float32 values: the LR store's content at the date."""
        g = self.geometry
        state = self.large_scale.state(g.lr.latitudes, g.lr.longitudes,
                                       self.dates[date_index], g.orog_lr, g.land_lr,
                                       self.step_hours)
        return state.astype(np.float32).astype(np.float64)

    def interpolate(self, lr_state: np.ndarray, cells=None) -> np.ndarray:
        """I x_LR on the cells: (n_var, n_lr) → (n_var, n) float64."""
        lr_state = np.asarray(lr_state, dtype=np.float64)
        if lr_state.shape != (len(self.variables), self.geometry.lr.size):
            raise ValueError(f"LR state has shape {lr_state.shape}, expected "
                             f"({len(self.variables)}, {self.geometry.lr.size})")
        rows = self.geometry.interp[cell_index(cells, self.geometry.hr.size)]
        return np.asarray(rows @ lr_state.T).T

    def _fine_orog(self, cells) -> np.ndarray:
        return self.geometry.fine_orog[cell_index(cells, self.geometry.hr.size)]

    def conditional_mean(self, lr_state: np.ndarray, cells=None) -> np.ndarray:
        """E[HR | LR] (n_var, n), closed form."""
        return self.fine.conditional_mean(self.interpolate(lr_state, cells),
                                          self._fine_orog(cells))

    def conditional_std(self, lr_state: np.ndarray, cells=None) -> np.ndarray:
        """sd[HR | LR] (n_var, n), closed form."""
        return self.fine.conditional_std(self.interpolate(lr_state, cells),
                                         self._fine_orog(cells))

    def residual_mean(self, lr_state: np.ndarray, cells=None) -> np.ndarray:
        """E[HR − I x_LR | LR] (n_var, n)."""
        interp = self.interpolate(lr_state, cells)
        return self.fine.conditional_mean(interp, self._fine_orog(cells)) - interp

    def noise_field(self, date_index: int, variable: int, member: int = 0,
                    stream: int = STREAM_TRUTH, sub_seed: int = 0, cells=None) -> np.ndarray:
        """The unit Gaussian noise field g (n,) with the given key, on the cells."""
        rng = np.random.default_rng(noise_key(self.seed, stream, sub_seed, date_index,
                                              variable, member))
        positions = self.noise.positions[cell_index(cells, self.geometry.hr.size)]
        return evaluate_modes(positions, *draw_modes(rng, self.noise))

    def sample(self, lr_state: np.ndarray, date_index: int, member: int = 0,
               stream: int = STREAM_TRUTH, sub_seed: int = 0, cells=None) -> np.ndarray:
        """One draw of HR | LR (n_var, n) float64 on the cells; the truth is
        (member 0, stream STREAM_TRUTH, sub_seed 0)."""
        interp = self.interpolate(lr_state, cells)
        noise = np.stack([self.noise_field(date_index, v, member, stream, sub_seed, cells)
                          for v in range(len(self.variables))])
        return self.fine.combine(interp, self._fine_orog(cells), noise, self.tail_strength)
