// Noise-conditioned (adaptive) LayerNorm, per-row cores shared by the CPU and CUDA drivers:
//
//   y[b, n, :] = (x[b, n, :] − μ) · r · (1 + scale[b, :]) + shift[b, :],   r = 1/√(σ² + eps)
//
// Backward for one row, with x̂ = (x − μ)·r and g = dy·(1 + scale):
//   dx = r · (g − mean(g) − x̂ · mean(g·x̂))
//   dscale[b] += dy·x̂,  dshift[b] += dy        (summed over the rows of sample b)
// The per-sample sums are accumulated into a caller-owned partial row (one per chunk of rows,
// so chunks never share one), and the caller reduces the partials over chunks.
// Layouts: x, y, dy, dx contiguous (B, N, C); scale/shift (B, C); mean/rstd (B, N) in the
// accumulation type.
#pragma once

#include "common.h"

namespace hpcds {

template <typename T> struct LayerNormParams {
  using A = typename Acc<T>::type;
  const T *x, *scale, *shift;
  int64_t B, N;
  int C;
  A eps;
  T* y; A *mean, *rstd;     // forward outputs
  const T* dy;              // backward input
  T* dx; A *dscale_part, *dshift_part;  // backward outputs; partials (B, chunks, C)
};

// Forward for row (b, n). The row is read three times (mean, variance, output) rather than held
// in registers, so any width works; re-reads hit L1 (a row of 1024 floats is 4 KiB).
template <typename T, typename Lanes>
HPCDS_HD void layer_norm_forward_row(const LayerNormParams<T>& a, int64_t b, int64_t n,
                                     const Lanes& lanes) {
  using A = typename Acc<T>::type;
  constexpr int L = Lanes::count;
  const int C = a.C, lane = lanes.lane();
  const int64_t row = b * a.N + n;
  const T* xr = a.x + row * C;
  A sum = A(0);
  HPCDS_LANE_SUM(sum)
  for (int c = lane; c < C; c += L) sum += static_cast<A>(xr[c]);
  const A mu = lanes.sum(sum) / A(C);
  A var = A(0);  // two-pass variance: no cancellation
  HPCDS_LANE_SUM(var)
  for (int c = lane; c < C; c += L) {
    const A xc = static_cast<A>(xr[c]) - mu;
    var += xc * xc;
  }
  const A r = hd_rsqrt(lanes.sum(var) / A(C) + a.eps);
  const T* sc = a.scale + b * C;
  const T* sh = a.shift + b * C;
  T* yr = a.y + row * C;
  HPCDS_LANE_LOOP
  for (int c = lane; c < C; c += L)
    yr[c] = static_cast<T>((static_cast<A>(xr[c]) - mu) * r * (A(1) + static_cast<A>(sc[c])) +
                           static_cast<A>(sh[c]));
  if (lane == 0) {
    a.mean[row] = mu;
    a.rstd[row] = r;
  }
}

// Backward for row (b, n): writes dx, adds this row's dscale/dshift into the partial rows
// (length C, owned by the caller's chunk of rows).
template <typename T, typename Lanes>
HPCDS_HD void layer_norm_backward_row(const LayerNormParams<T>& a, int64_t b, int64_t n,
                                      typename Acc<T>::type* dscale_part,
                                      typename Acc<T>::type* dshift_part, const Lanes& lanes) {
  using A = typename Acc<T>::type;
  constexpr int L = Lanes::count;
  const int C = a.C, lane = lanes.lane();
  const int64_t row = b * a.N + n;
  const T* xr = a.x + row * C;
  const T* gr = a.dy + row * C;
  const T* sc = a.scale + b * C;
  const A mu = a.mean[row], r = a.rstd[row];
  A sg = A(0), sgx = A(0);
  HPCDS_LANE_SUM2(sg, sgx)
  for (int c = lane; c < C; c += L) {
    const A xh = (static_cast<A>(xr[c]) - mu) * r;
    const A dy = static_cast<A>(gr[c]);
    const A g = dy * (A(1) + static_cast<A>(sc[c]));
    sg += g;
    sgx += g * xh;
    dscale_part[c] += dy * xh;
    dshift_part[c] += dy;
  }
  const A mg = lanes.sum(sg) / A(C), mgx = lanes.sum(sgx) / A(C);
  T* dxr = a.dx + row * C;
  HPCDS_LANE_LOOP
  for (int c = lane; c < C; c += L) {
    const A xh = (static_cast<A>(xr[c]) - mu) * r;
    const A g = static_cast<A>(gr[c]) * (A(1) + static_cast<A>(sc[c]));
    dxr[c] = static_cast<T>(r * (g - mg - xh * mgx));
  }
}

}  // namespace hpcds
