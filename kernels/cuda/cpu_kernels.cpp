// CPU driver: OpenMP over destination nodes (attention) and rows (LayerNorm); each thread runs
// the shared per-item cores with SerialLanes (the whole head / row, vectorised by `omp simd`).
// Dynamic scheduling in chunks: in-degrees are uneven, and a chunk of 64 nodes amortises the
// scheduling cost (~0.1 µs) over ~64·k·H·d·4 FLOPs.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "drivers.h"

namespace hpcds {
namespace cpu {

// The graph is checked once per forward on the CPU (O(E), serial, ~1% of the kernel): a bad
// index would otherwise read out of bounds. The backward reuses the checked graph.
template <typename T, typename I> static void check_graph(const GraphAttentionParams<T, I>& a) {
  if (a.rowptr[0] != 0 || a.rowptr[a.n_dst] != a.E)
    throw std::out_of_range("rowptr must run from 0 to E: are receivers sorted and < n_dst?");
  for (int64_t i = 0; i < a.n_dst; ++i)
    for (int64_t e = a.rowptr[i]; e < a.rowptr[i + 1]; ++e)
      if (a.receivers[e] != i) throw std::out_of_range("receivers are not sorted");
  for (int64_t e = 0; e < a.E; ++e)
    if (a.senders[e] < 0 || a.senders[e] >= a.n_src)
      throw std::out_of_range("sender " + std::to_string(a.senders[e]) + " of edge " +
                              std::to_string(e) + " is outside [0, " + std::to_string(a.n_src) +
                              ")");
}

template <typename T, typename I>
void graph_attention_forward(const GraphAttentionParams<T, I>& a, int threads) {
  check_graph(a);
  dispatch_head_dim(a.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const int64_t items = a.B * a.n_dst;
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads)
    for (int64_t it = 0; it < items; ++it)
      for (int h = 0; h < a.H; ++h)
        graph_attention_forward_item<D>(a, it / a.n_dst, it % a.n_dst, h, SerialLanes{});
  });
}

template <typename T, typename I>
void graph_attention_backward(const GraphAttentionParams<T, I>& a, int threads) {
  dispatch_head_dim(a.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const int64_t dst_items = a.B * a.n_dst, src_items = a.B * a.n_src;
#pragma omp parallel num_threads(threads)
    {
      // the implicit barrier after the first loop orders it before the second (p, ds)
#pragma omp for schedule(dynamic, 64)
      for (int64_t it = 0; it < dst_items; ++it)
        for (int h = 0; h < a.H; ++h)
          graph_attention_backward_dst_item<D>(a, it / a.n_dst, it % a.n_dst, h, SerialLanes{});
#pragma omp for schedule(dynamic, 64)
      for (int64_t it = 0; it < src_items; ++it)
        for (int h = 0; h < a.H; ++h)
          graph_attention_backward_src_item<D>(a, it / a.n_src, it % a.n_src, h, SerialLanes{});
    }
  });
}

template <typename T> void layer_norm_forward(const LayerNormParams<T>& a, int threads) {
  const int64_t rows = a.B * a.N;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) layer_norm_forward_row(a, r / a.N, r % a.N, SerialLanes{});
}

template <typename T>
void layer_norm_backward(const LayerNormParams<T>& a, int64_t rows_per_chunk, int threads) {
  using A = typename Acc<T>::type;
  const int64_t chunks = (a.N + rows_per_chunk - 1) / rows_per_chunk;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t it = 0; it < a.B * chunks; ++it) {
    const int64_t b = it / chunks, g = it % chunks;
    A* ps = a.dscale_part + it * a.C;  // this chunk's own partial rows: no races
    A* pb = a.dshift_part + it * a.C;
    std::fill(ps, ps + a.C, A(0));
    std::fill(pb, pb + a.C, A(0));
    for (int64_t n = g * rows_per_chunk; n < std::min(a.N, (g + 1) * rows_per_chunk); ++n)
      layer_norm_backward_row(a, b, n, ps, pb, SerialLanes{});
  }
}

template <typename I>
void csc_order(const I* senders, int64_t E, int64_t n_src, int64_t* perm, int64_t* colptr) {
  std::fill(colptr, colptr + n_src + 1, int64_t(0));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t s = static_cast<int64_t>(senders[e]);
    if (s < 0 || s >= n_src)
      throw std::out_of_range("sender " + std::to_string(s) + " of edge " + std::to_string(e) +
                              " is outside [0, " + std::to_string(n_src) + ")");
    ++colptr[s + 1];
  }
  for (int64_t j = 0; j < n_src; ++j) colptr[j + 1] += colptr[j];
  std::vector<int64_t> next(colptr, colptr + n_src);
  for (int64_t e = 0; e < E; ++e)  // stable: edges stay in order
    perm[next[static_cast<int64_t>(senders[e])]++] = e;
}

#define HPCDS_INSTANTIATE_GA(T, I)                                                        \
  template void graph_attention_forward<T, I>(const GraphAttentionParams<T, I>&, int);    \
  template void graph_attention_backward<T, I>(const GraphAttentionParams<T, I>&, int);
#define HPCDS_INSTANTIATE(T)                                                              \
  HPCDS_INSTANTIATE_GA(T, int32_t)                                                        \
  HPCDS_INSTANTIATE_GA(T, int64_t)                                                        \
  template void layer_norm_forward<T>(const LayerNormParams<T>&, int);                    \
  template void layer_norm_backward<T>(const LayerNormParams<T>&, int64_t, int);
HPCDS_INSTANTIATE(float)
HPCDS_INSTANTIATE(double)
#undef HPCDS_INSTANTIATE
#undef HPCDS_INSTANTIATE_GA
template void csc_order<int32_t>(const int32_t*, int64_t, int64_t, int64_t*, int64_t*);
template void csc_order<int64_t>(const int64_t*, int64_t, int64_t, int64_t*, int64_t*);

}  // namespace cpu
}  // namespace hpcds
