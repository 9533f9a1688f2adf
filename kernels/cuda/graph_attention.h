// Fused sparse graph attention over a destination-sorted (CSR) graph: the per-item cores,
// shared by the CPU (OpenMP) and CUDA drivers. Math, for one sample b, destination i, head h:
//
//   s_e   = (q_i · k_{src(e)}) / √d + bias_e          for the incoming edges e of i
//   out_i = Σ_e softmax(s)_e · v_{src(e)}            (0 when i has no incoming edge)
//   lse_i = log Σ_e exp(s_e)                         saved for the backward
//
// Forward: ONE pass over the incoming edges with an online softmax (running max m, normaliser
// l, rescaled accumulator), so nothing per edge × feature is ever stored.
// Backward (FlashAttention style, by recomputation), with D_i = dout_i · out_i:
//   p_e = exp(s_e − lse_i),  ds_e = p_e (dout_i · v_{src(e)} − D_i)
//   dq_i = Σ_e ds_e k_{src(e)} / √d                    destination pass: one row per item
//   dk_j = Σ_{e: src(e)=j} ds_e q_{dst(e)} / √d        source pass, over the source-sorted
//   dv_j = Σ_{e: src(e)=j} p_e dout_{dst(e)}            (CSC) edge order: no atomics
//   dbias_e = ds_e
// The destination pass stores p_e and ds_e (per edge × head, not × feature) for the source
// pass, so the logits are recomputed once, not twice.
//
// Index type I (senders, receivers): int32_t or int64_t, as the caller's tensors (an int32 graph
// halves the index memory; every grid here has < 2^31 nodes). Indices are widened to int64_t
// as soon as they are loaded, so every offset (src * stride can exceed 2^31) is 64-bit;
// rowptr, perm and colptr (made by the launchers) are always int64_t.
//
// Layouts (element strides): node tensors (B, N, H, d) with any batch/node stride and packed
// (H, d); bias (B, E, H) with any batch stride (0 when shared by the batch) and packed (E, H);
// out/dq/dk/dv contiguous; lse, p, ds contiguous in the accumulation type.
#pragma once

#include "common.h"

namespace hpcds {

template <typename T, typename I = int64_t> struct GraphAttentionParams {
  using A = typename Acc<T>::type;
  using Index = I;
  const T *q, *k, *v, *bias;
  int64_t q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, bias_sb;
  const I *senders, *receivers;        // (E,) int32_t or int64_t
  const int64_t *rowptr;               // (n_dst + 1,): edges of i are rowptr[i] .. rowptr[i+1]
  const int64_t *perm, *colptr;        // source order: edges of j are perm[colptr[j] .. colptr[j+1]]
  int64_t B, n_dst, n_src, E;
  int H, d;
  A scale;                             // 1/√d
  T *out; A *lse;                      // forward outputs
  const T *dout;                       // backward input, contiguous (B, n_dst, H, d)
  T *dq, *dk, *dv; A *p, *ds;          // backward outputs; p, ds (B, E, H)
};

// Forward for (b, i, h). D: compile-time head dim (0 = runtime a.d).
template <int D, typename T, typename I, typename Lanes>
HPCDS_HD void graph_attention_forward_item(const GraphAttentionParams<T, I>& a, int64_t b,
                                           int64_t i, int h, const Lanes& lanes) {
  using A = typename Acc<T>::type;
  constexpr int PER = PerLane<D, Lanes>::value;
  const int d = D > 0 ? D : a.d, lane = lanes.lane();
  const T* qi = a.q + b * a.q_sb + i * a.q_sn + h * d;
  A q[PER], acc[PER];
  HPCDS_LANE_LOOP
  for (int j = 0; j < PER; ++j) {
    const int c = lane + j * Lanes::count;
    q[j] = c < d ? static_cast<A>(qi[c]) * a.scale : A(0);  // fold 1/√d into q once
    acc[j] = A(0);
  }
  A m = neg_inf<A>(), l = A(0);
  for (int64_t e = a.rowptr[i]; e < a.rowptr[i + 1]; ++e) {
    const int64_t src = static_cast<int64_t>(a.senders[e]);  // 64-bit offsets
    const T* kj = a.k + b * a.k_sb + src * a.k_sn + h * d;
    const T* vj = a.v + b * a.v_sb + src * a.v_sn + h * d;
    A part = A(0);
    HPCDS_LANE_SUM(part)
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) part += q[j] * static_cast<A>(kj[c]);
    }
    const A s = lanes.sum(part) + static_cast<A>(a.bias[b * a.bias_sb + e * a.H + h]);
    // online softmax with one exp per edge: a new max rescales what was accumulated under
    // the old one (exp(-inf) = 0 on the first edge), otherwise the edge's weight is exp(s - m).
    // s is the same on every lane, so the branch is warp-uniform on the GPU.
    A corr = A(1), pe = A(1);
    if (s > m) {
      corr = hd_exp(m - s);
      m = s;
    } else {
      pe = hd_exp(s - m);
    }
    l = l * corr + pe;
    HPCDS_LANE_LOOP
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) acc[j] = acc[j] * corr + pe * static_cast<A>(vj[c]);
    }
  }
  const A inv = l > A(0) ? A(1) / l : A(0);  // zero in-degree: out = 0
  T* oi = a.out + ((b * a.n_dst + i) * a.H + h) * d;
  HPCDS_LANE_LOOP
  for (int j = 0; j < PER; ++j) {
    const int c = lane + j * Lanes::count;
    if (c < d) oi[c] = static_cast<T>(acc[j] * inv);
  }
  if (lane == 0) a.lse[(b * a.n_dst + i) * a.H + h] = l > A(0) ? m + hd_log(l) : neg_inf<A>();
}

// Backward, destination pass for (b, i, h): dq_i, and p_e, ds_e for the incoming edges.
template <int D, typename T, typename I, typename Lanes>
HPCDS_HD void graph_attention_backward_dst_item(const GraphAttentionParams<T, I>& a,
                                                int64_t b, int64_t i, int h,
                                                const Lanes& lanes) {
  using A = typename Acc<T>::type;
  constexpr int PER = PerLane<D, Lanes>::value;
  const int d = D > 0 ? D : a.d, lane = lanes.lane();
  const int64_t row = (b * a.n_dst + i) * a.H + h;
  const T* qi = a.q + b * a.q_sb + i * a.q_sn + h * d;
  const T* oi = a.out + row * d;
  const T* gi = a.dout + row * d;
  A q[PER], g[PER], dq[PER];
  A dot = A(0);
  HPCDS_LANE_SUM(dot)
  for (int j = 0; j < PER; ++j) {
    const int c = lane + j * Lanes::count;
    q[j] = c < d ? static_cast<A>(qi[c]) * a.scale : A(0);
    g[j] = c < d ? static_cast<A>(gi[c]) : A(0);
    dq[j] = A(0);
    if (c < d) dot += g[j] * static_cast<A>(oi[c]);
  }
  const A Di = lanes.sum(dot), lse = a.lse[row];
  for (int64_t e = a.rowptr[i]; e < a.rowptr[i + 1]; ++e) {
    const int64_t src = static_cast<int64_t>(a.senders[e]);  // 64-bit offsets
    const T* kj = a.k + b * a.k_sb + src * a.k_sn + h * d;
    const T* vj = a.v + b * a.v_sb + src * a.v_sn + h * d;
    A qk = A(0), gv = A(0);
    HPCDS_LANE_SUM(qk)
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) qk += q[j] * static_cast<A>(kj[c]);
    }
    HPCDS_LANE_SUM(gv)
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) gv += g[j] * static_cast<A>(vj[c]);
    }
    const A s = lanes.sum(qk) + static_cast<A>(a.bias[b * a.bias_sb + e * a.H + h]);
    const A pe = hd_exp(s - lse);
    const A dse = pe * (lanes.sum(gv) - Di);
    HPCDS_LANE_LOOP
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) dq[j] += dse * static_cast<A>(kj[c]);
    }
    if (lane == 0) {
      a.p[(b * a.E + e) * a.H + h] = pe;
      a.ds[(b * a.E + e) * a.H + h] = dse;
    }
  }
  T* dqi = a.dq + row * d;
  HPCDS_LANE_LOOP
  for (int j = 0; j < PER; ++j) {
    const int c = lane + j * Lanes::count;
    if (c < d) dqi[c] = static_cast<T>(dq[j] * a.scale);
  }
}

// Backward, source pass for (b, j, h): dk_j and dv_j over the outgoing edges of source j.
template <int D, typename T, typename I, typename Lanes>
HPCDS_HD void graph_attention_backward_src_item(const GraphAttentionParams<T, I>& a,
                                                int64_t b, int64_t src, int h,
                                                const Lanes& lanes) {
  using A = typename Acc<T>::type;
  constexpr int PER = PerLane<D, Lanes>::value;
  const int d = D > 0 ? D : a.d, lane = lanes.lane();
  A dk[PER], dv[PER];
  HPCDS_LANE_LOOP
  for (int j = 0; j < PER; ++j) dk[j] = dv[j] = A(0);
  for (int64_t t = a.colptr[src]; t < a.colptr[src + 1]; ++t) {
    const int64_t e = a.perm[t], i = static_cast<int64_t>(a.receivers[e]);
    const A dse = a.ds[(b * a.E + e) * a.H + h], pe = a.p[(b * a.E + e) * a.H + h];
    const T* qi = a.q + b * a.q_sb + i * a.q_sn + h * d;
    const T* gi = a.dout + ((b * a.n_dst + i) * a.H + h) * d;
    HPCDS_LANE_LOOP
    for (int j = 0; j < PER; ++j) {
      const int c = lane + j * Lanes::count;
      if (c < d) {
        dk[j] += dse * static_cast<A>(qi[c]);
        dv[j] += pe * static_cast<A>(gi[c]);
      }
    }
  }
  const int64_t row = (b * a.n_src + src) * a.H + h;
  T* dkj = a.dk + row * d;
  T* dvj = a.dv + row * d;
  HPCDS_LANE_LOOP
  for (int j = 0; j < PER; ++j) {
    const int c = lane + j * Lanes::count;
    if (c < d) {
      dkj[c] = static_cast<T>(dk[j] * a.scale);
      dvj[c] = static_cast<T>(dv[j]);
    }
  }
}

}  // namespace hpcds
