// CUDA driver (sm_90): one warp per item, running the same per-item cores as the CPU build with
// WarpLanes. Graph attention: a warp per (sample, destination, head) — lanes split the head dim
// (64 → 2 features per lane, coalesced 256-byte row loads), the q·k and dout·v dot products are
// warp shuffles, and the online-softmax state is per-warp registers. LayerNorm: a warp per row
// (forward), a warp per chunk of rows with its own partial dscale/dshift rows (backward).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "drivers.h"

namespace hpcds {
namespace cuda {

struct WarpLanes {
  static constexpr int count = 32;
  __device__ int lane() const { return threadIdx.x & 31; }
  template <typename A> __device__ A sum(A x) const {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
  }
};

constexpr int kWarpsPerBlock = 4;

// Global warp index of this thread; items beyond `items` exit (whole warps, so shuffles are safe).
__device__ __forceinline__ int64_t warp_id() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

inline unsigned blocks_for(int64_t items) {
  return static_cast<unsigned>((items + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

template <int D, typename T, typename I>
__global__ void ga_forward_kernel(GraphAttentionParams<T, I> a) {
  const int64_t w = warp_id();
  if (w >= a.B * a.n_dst * a.H) return;
  const int h = static_cast<int>(w % a.H);
  const int64_t bi = w / a.H;
  graph_attention_forward_item<D>(a, bi / a.n_dst, bi % a.n_dst, h, WarpLanes{});
}

template <int D, typename T, typename I>
__global__ void ga_backward_dst_kernel(GraphAttentionParams<T, I> a) {
  const int64_t w = warp_id();
  if (w >= a.B * a.n_dst * a.H) return;
  const int h = static_cast<int>(w % a.H);
  const int64_t bi = w / a.H;
  graph_attention_backward_dst_item<D>(a, bi / a.n_dst, bi % a.n_dst, h, WarpLanes{});
}

template <int D, typename T, typename I>
__global__ void ga_backward_src_kernel(GraphAttentionParams<T, I> a) {
  const int64_t w = warp_id();
  if (w >= a.B * a.n_src * a.H) return;
  const int h = static_cast<int>(w % a.H);
  const int64_t bj = w / a.H;
  graph_attention_backward_src_item<D>(a, bj / a.n_src, bj % a.n_src, h, WarpLanes{});
}

template <typename T> __global__ void ln_forward_kernel(LayerNormParams<T> a) {
  const int64_t w = warp_id();
  if (w >= a.B * a.N) return;
  layer_norm_forward_row(a, w / a.N, w % a.N, WarpLanes{});
}

template <typename T>
__global__ void ln_backward_kernel(LayerNormParams<T> a, int64_t rows_per_chunk, int64_t chunks) {
  using A = typename Acc<T>::type;
  const int64_t w = warp_id();
  if (w >= a.B * chunks) return;
  const int64_t b = w / chunks, g = w % chunks;
  A* ps = a.dscale_part + w * a.C;
  A* pb = a.dshift_part + w * a.C;
  for (int c = threadIdx.x & 31; c < a.C; c += 32) ps[c] = pb[c] = A(0);  // lane-owned
  const int64_t end = min(a.N, (g + 1) * rows_per_chunk);
  for (int64_t n = g * rows_per_chunk; n < end; ++n)
    layer_norm_backward_row(a, b, n, ps, pb, WarpLanes{});
}

template <typename T, typename I>
void graph_attention_forward(const GraphAttentionParams<T, I>& a, void* stream) {
  const int64_t items = a.B * a.n_dst * a.H;
  if (items == 0) return;
  dispatch_head_dim(a.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    ga_forward_kernel<D, T, I><<<blocks_for(items), 32 * kWarpsPerBlock, 0,
                                 static_cast<cudaStream_t>(stream)>>>(a);
  });
  check(cudaGetLastError(), "graph_attention_forward");
}

template <typename T, typename I>
void graph_attention_backward(const GraphAttentionParams<T, I>& a, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t dst_items = a.B * a.n_dst * a.H, src_items = a.B * a.n_src * a.H;
  dispatch_head_dim(a.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    // same stream: the source pass starts after the destination pass wrote p and ds
    if (dst_items > 0)
      ga_backward_dst_kernel<D, T, I><<<blocks_for(dst_items), 32 * kWarpsPerBlock, 0, s>>>(a);
    if (src_items > 0)
      ga_backward_src_kernel<D, T, I><<<blocks_for(src_items), 32 * kWarpsPerBlock, 0, s>>>(a);
  });
  check(cudaGetLastError(), "graph_attention_backward");
}

template <typename T> void layer_norm_forward(const LayerNormParams<T>& a, void* stream) {
  const int64_t rows = a.B * a.N;
  if (rows == 0) return;
  ln_forward_kernel<T><<<blocks_for(rows), 32 * kWarpsPerBlock, 0,
                         static_cast<cudaStream_t>(stream)>>>(a);
  check(cudaGetLastError(), "layer_norm_forward");
}

template <typename T>
void layer_norm_backward(const LayerNormParams<T>& a, int64_t rows_per_chunk, void* stream) {
  const int64_t chunks = (a.N + rows_per_chunk - 1) / rows_per_chunk;
  if (a.B * chunks == 0) return;
  ln_backward_kernel<T><<<blocks_for(a.B * chunks), 32 * kWarpsPerBlock, 0,
                          static_cast<cudaStream_t>(stream)>>>(a, rows_per_chunk, chunks);
  check(cudaGetLastError(), "layer_norm_backward");
}

#define HPCDS_INSTANTIATE_GA(T, I)                                                        \
  template void graph_attention_forward<T, I>(const GraphAttentionParams<T, I>&, void*);  \
  template void graph_attention_backward<T, I>(const GraphAttentionParams<T, I>&, void*);
#define HPCDS_INSTANTIATE(T)                                                              \
  HPCDS_INSTANTIATE_GA(T, int32_t)                                                        \
  HPCDS_INSTANTIATE_GA(T, int64_t)                                                        \
  template void layer_norm_forward<T>(const LayerNormParams<T>&, void*);                  \
  template void layer_norm_backward<T>(const LayerNormParams<T>&, int64_t, void*);
HPCDS_INSTANTIATE(float)
HPCDS_INSTANTIATE(double)
#undef HPCDS_INSTANTIATE
#undef HPCDS_INSTANTIATE_GA

}  // namespace cuda
}  // namespace hpcds
