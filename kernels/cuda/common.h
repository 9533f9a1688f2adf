// Shared by the host (g++, OpenMP) and device (nvcc) builds of the hpcds kernels.
//
// A kernel's per-item computation (one destination node and head of the graph attention, one
// row of the LayerNorm) is written once, as a template over a `Lanes` policy: the lanes that
// cooperate on the item. The item's feature dimension is split round-robin over the lanes (lane
// l owns features l, l + count, l + 2·count, ...) and reductions over it go through
// `lanes.sum(x)`.
//   - CPU: `SerialLanes`, one lane owns everything and sum() is the identity; the loops over the
//     owned features are `omp simd`, so g++ vectorises them.
//   - CUDA: `WarpLanes` (cuda_kernels.cu), the 32 threads of a warp, sum() a butterfly shuffle;
//     the loops are unrolled over a compile-time bound so the owned features live in registers.
// Nothing here allocates, synchronises or knows about OpenMP threads or CUDA blocks: the drivers
// (cpu_kernels.cpp, cuda_kernels.cu) map items to threads.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define HPCDS_HD __host__ __device__ __forceinline__
#else
#define HPCDS_HD inline
#endif

#define HPCDS_PRAGMA(x) _Pragma(#x)
#if defined(__CUDA_ARCH__)
// device pass: unroll the owned-feature loops (compile-time bound) so arrays stay in registers
#define HPCDS_LANE_LOOP HPCDS_PRAGMA(unroll)
#define HPCDS_LANE_SUM(var) HPCDS_PRAGMA(unroll)
#define HPCDS_LANE_SUM2(a, b) HPCDS_PRAGMA(unroll)
#elif defined(_OPENMP)
#define HPCDS_LANE_LOOP HPCDS_PRAGMA(omp simd)
#define HPCDS_LANE_SUM(var) HPCDS_PRAGMA(omp simd reduction(+ : var))
#define HPCDS_LANE_SUM2(a, b) HPCDS_PRAGMA(omp simd reduction(+ : a, b))
#else
#define HPCDS_LANE_LOOP
#define HPCDS_LANE_SUM(var)
#define HPCDS_LANE_SUM2(a, b)
#endif

namespace hpcds {

// Largest head dim handled by the generic (runtime-size) attention instantiation.
constexpr int kMaxHeadDim = 256;

// Accumulation type: float for float inputs, double for double inputs (as the reference).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

HPCDS_HD float hd_exp(float x) { return expf(x); }
HPCDS_HD double hd_exp(double x) { return exp(x); }
HPCDS_HD float hd_log(float x) { return logf(x); }
HPCDS_HD double hd_log(double x) { return log(x); }
HPCDS_HD float hd_rsqrt(float x) { return 1.0f / sqrtf(x); }
HPCDS_HD double hd_rsqrt(double x) { return 1.0 / sqrt(x); }
template <typename A> HPCDS_HD A hd_max(A a, A b) { return a > b ? a : b; }
template <typename A> HPCDS_HD A neg_inf() { return -static_cast<A>(INFINITY); }

// One lane doing all the work: the CPU build.
struct SerialLanes {
  static constexpr int count = 1;
  HPCDS_HD int lane() const { return 0; }
  template <typename A> HPCDS_HD A sum(A x) const { return x; }
};

// How many features lane `lane` owns at most, for a compile-time size D (0: runtime size, up to
// kMaxHeadDim). Loops run to this bound and skip features >= the runtime size.
template <int D, typename Lanes> struct PerLane {
  static constexpr int value = ((D > 0 ? D : kMaxHeadDim) + Lanes::count - 1) / Lanes::count;
};

}  // namespace hpcds
