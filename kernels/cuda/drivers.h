// The drivers: map the per-item cores onto CPU threads (cpu_kernels.cpp, OpenMP over
// destination nodes / rows) or CUDA warps (cuda_kernels.cu). Same entry points in both
// namespaces; buffers are allocated by the caller (Python, through torch), never here.
// Graph attention is instantiated for T in {float, double} × index type I in {int32_t,
// int64_t} (the senders/receivers; see graph_attention.h).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "graph_attention.h"
#include "layer_norm.h"

namespace hpcds {

// Call f(std::integral_constant<int, D>) with the compile-time head dim D for the common sizes,
// D = 0 (runtime size, up to kMaxHeadDim) otherwise.
template <typename F> void dispatch_head_dim(int d, F&& f) {
  switch (d) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

namespace cpu {
// `threads`: OpenMP threads to use (the caller passes torch.get_num_threads()).
template <typename T, typename I>
void graph_attention_forward(const GraphAttentionParams<T, I>& a, int threads);
// destination pass (dq, p, ds), then source pass (dk, dv); needs perm/colptr (csc_order)
template <typename T, typename I>
void graph_attention_backward(const GraphAttentionParams<T, I>& a, int threads);
template <typename T> void layer_norm_forward(const LayerNormParams<T>& a, int threads);
// partials (B, ceil(N / rows_per_chunk), C), overwritten
template <typename T>
void layer_norm_backward(const LayerNormParams<T>& a, int64_t rows_per_chunk, int threads);
// Source-sorted edge order by a stable counting sort, O(E + n_src): the edges leaving source j
// are perm[colptr[j] .. colptr[j + 1]]. Throws std::out_of_range for a sender outside [0, n_src).
// I: int32_t or int64_t senders; perm and colptr are int64_t.
template <typename I>
void csc_order(const I* senders, int64_t E, int64_t n_src, int64_t* perm, int64_t* colptr);
}  // namespace cpu

namespace cuda {
// `stream`: a cudaStream_t (the caller passes torch's current stream).
template <typename T, typename I>
void graph_attention_forward(const GraphAttentionParams<T, I>& a, void* stream);
template <typename T, typename I>
void graph_attention_backward(const GraphAttentionParams<T, I>& a, void* stream);
template <typename T> void layer_norm_forward(const LayerNormParams<T>& a, void* stream);
template <typename T>
void layer_norm_backward(const LayerNormParams<T>& a, int64_t rows_per_chunk, void* stream);
}  // namespace cuda

}  // namespace hpcds
