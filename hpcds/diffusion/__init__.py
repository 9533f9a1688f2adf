"""EDM diffusion (Karras et al. 2022): preconditioning, losses, σ distributions, schedules,
samplers and sharding-invariant noise. One idea per module:

precond    EDMPrecond: D(x; σ) = c_skip·x + c_out·F(c_in·x, cond, forcings, c_noise)
loss       EDMLoss (λ(σ)-weighted, area/variable-weighted MSE), RegressionLoss
sigma      LogNormalSigma, KarrasUniformSigma: training σ distributions
schedules  karras_sigmas, piecewise_sigmas: sampling σ schedules
samplers   heun_sampler (Algorithm 2 with churn), dpmpp_2m_sampler: float64 state
noise      member_noise / batch_noise: counter-based noise keyed by global node index
"""

from hpcds.diffusion.loss import (EDMLoss, LossOutput, RegressionLoss, edm_loss_weight,
                                  make_loss)
from hpcds.diffusion.noise import batch_noise, make_noise_fn, member_noise
from hpcds.diffusion.precond import DETERMINISTIC_C_NOISE, EDMPrecond, edm_coefficients
from hpcds.diffusion.samplers import dpmpp_2m_sampler, heun_sampler, sample
from hpcds.diffusion.schedules import karras_sigmas, make_schedule, piecewise_sigmas
from hpcds.diffusion.sigma import KarrasUniformSigma, LogNormalSigma, make_sigma_sampler

__all__ = [
    "EDMPrecond", "edm_coefficients", "DETERMINISTIC_C_NOISE",
    "EDMLoss", "RegressionLoss", "LossOutput", "edm_loss_weight", "make_loss",
    "LogNormalSigma", "KarrasUniformSigma", "make_sigma_sampler",
    "karras_sigmas", "piecewise_sigmas", "make_schedule",
    "heun_sampler", "dpmpp_2m_sampler", "sample",
    "member_noise", "batch_noise", "make_noise_fn",
]
