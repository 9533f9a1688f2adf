// Python bindings: nanobind + DLPack, no libtorch. Arrays arrive as DLPack views of torch
// tensors (any framework works); the module only checks shapes, strides, dtypes and devices,
// fills raw-pointer parameter structs and calls a driver. Every output buffer is allocated by
// the caller, so nothing here owns memory or needs a torch allocator or stream.
// Compiled twice: `_hpcds_native` (CPU driver, last argument = OpenMP threads) and, with
// HPCDS_CUDA_MODULE, `_hpcds_native_cuda` (CUDA driver, last argument = cudaStream_t as int).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <stdexcept>
#include <string>

#include "drivers.h"

namespace nb = nanobind;
using Array = nb::ndarray<>;

#ifdef HPCDS_CUDA_MODULE
#define HPCDS_MODULE _hpcds_native_cuda
namespace drv = hpcds::cuda;
using Exec = uintptr_t;  // cudaStream_t
constexpr int kDevice = nb::device::cuda::value;
inline void* exec_arg(Exec s) { return reinterpret_cast<void*>(s); }
#else
#define HPCDS_MODULE _hpcds_native
namespace drv = hpcds::cpu;
using Exec = int;  // OpenMP threads
constexpr int kDevice = nb::device::cpu::value;
inline int exec_arg(Exec t) { return t > 0 ? t : 1; }
#endif

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

void check_device(const Array& a, const char* name) {
  if (a.device_type() != kDevice) fail(std::string(name) + ": array is on the wrong device");
}

template <typename T> T* ptr(const Array& a, const char* name) {
  check_device(a, name);
  if (a.dtype() != nb::dtype<T>()) fail(std::string(name) + ": unexpected dtype");
  return static_cast<T*>(a.data());
}

// Node tensor (B, N, H, d) with packed (H, d): returns the batch and node strides.
void node_strides(const Array& a, const char* name, int64_t B, int H, int d, int64_t* sb,
                  int64_t* sn) {
  if (a.ndim() != 4 || int64_t(a.shape(0)) != B || int(a.shape(2)) != H || int(a.shape(3)) != d)
    fail(std::string(name) + ": expected shape (B, N, H, d) matching q");
  if (a.stride(3) != 1 || a.stride(2) != d)
    fail(std::string(name) + ": the (H, d) dims must be packed (call .contiguous())");
  *sb = a.stride(0);
  *sn = a.stride(1);
}

void check_contiguous(const Array& a, const char* name, std::initializer_list<int64_t> shape) {
  if (a.ndim() != shape.size()) fail(std::string(name) + ": wrong number of dims");
  int64_t expect = 1;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (int64_t(a.shape(i)) != shape.begin()[i]) fail(std::string(name) + ": wrong shape");
    if (a.shape(i) > 1 && a.stride(i) != expect) fail(std::string(name) + ": not contiguous");
    expect *= shape.begin()[i];
  }
}

// Fills everything the forward and backward share. I: the index type of senders/receivers.
template <typename T, typename I>
hpcds::GraphAttentionParams<T, I> ga_params(const Array& q, const Array& k, const Array& v,
                                            const Array& bias, const Array& senders,
                                            const Array& receivers, const Array& rowptr) {
  hpcds::GraphAttentionParams<T, I> a{};
  if (q.ndim() != 4) fail("q: expected (B, n_dst, H, d)");
  a.B = q.shape(0), a.n_dst = q.shape(1), a.H = int(q.shape(2)), a.d = int(q.shape(3));
  if (a.d > hpcds::kMaxHeadDim) fail("head dim above " + std::to_string(hpcds::kMaxHeadDim));
  a.n_src = k.shape(1);
  a.E = senders.shape(0);
  a.scale = typename hpcds::Acc<T>::type(1) / std::sqrt(typename hpcds::Acc<T>::type(a.d));
  a.q = ptr<T>(q, "q"), a.k = ptr<T>(k, "k"), a.v = ptr<T>(v, "v");
  node_strides(q, "q", a.B, a.H, a.d, &a.q_sb, &a.q_sn);
  node_strides(k, "k", a.B, a.H, a.d, &a.k_sb, &a.k_sn);
  node_strides(v, "v", a.B, a.H, a.d, &a.v_sb, &a.v_sn);
  if (int64_t(v.shape(1)) != a.n_src) fail("v: must have as many rows as k");
  a.bias = ptr<T>(bias, "edge_bias");
  if (bias.ndim() != 3 || int64_t(bias.shape(0)) != a.B || int64_t(bias.shape(1)) != a.E ||
      int(bias.shape(2)) != a.H || bias.stride(2) != 1 || (a.E > 1 && bias.stride(1) != a.H))
    fail("edge_bias: expected (B, E, H) with packed (E, H) (stride 0 over B when shared)");
  a.bias_sb = bias.stride(0);
  check_contiguous(senders, "senders", {a.E});
  check_contiguous(receivers, "receivers", {a.E});
  check_contiguous(rowptr, "rowptr", {a.n_dst + 1});
  if (receivers.dtype() != senders.dtype())
    fail("senders and receivers must have the same dtype (int32 or int64)");
  a.senders = ptr<I>(senders, "senders");
  a.receivers = ptr<I>(receivers, "receivers");
  a.rowptr = ptr<int64_t>(rowptr, "rowptr");
  return a;
}

template <typename T, typename I>
void ga_forward(const Array& q, const Array& k, const Array& v, const Array& bias,
                const Array& senders, const Array& receivers, const Array& rowptr,
                const Array& out, const Array& lse, Exec exec) {
  auto a = ga_params<T, I>(q, k, v, bias, senders, receivers, rowptr);
  check_contiguous(out, "out", {a.B, a.n_dst, a.H, a.d});
  check_contiguous(lse, "lse", {a.B, a.n_dst, a.H});
  a.out = ptr<T>(out, "out");
  a.lse = ptr<typename hpcds::Acc<T>::type>(lse, "lse");
  drv::graph_attention_forward(a, exec_arg(exec));
}

template <typename T, typename I>
void ga_backward(const Array& q, const Array& k, const Array& v, const Array& bias,
                 const Array& senders, const Array& receivers, const Array& rowptr,
                 const Array& perm, const Array& colptr, const Array& out, const Array& dout,
                 const Array& lse, const Array& dq, const Array& dk, const Array& dv,
                 const Array& p, const Array& ds, Exec exec) {
  using A = typename hpcds::Acc<T>::type;
  auto a = ga_params<T, I>(q, k, v, bias, senders, receivers, rowptr);
  check_contiguous(perm, "perm", {a.E});
  check_contiguous(colptr, "colptr", {a.n_src + 1});
  check_contiguous(out, "out", {a.B, a.n_dst, a.H, a.d});
  check_contiguous(dout, "dout", {a.B, a.n_dst, a.H, a.d});
  check_contiguous(lse, "lse", {a.B, a.n_dst, a.H});
  check_contiguous(dq, "dq", {a.B, a.n_dst, a.H, a.d});
  check_contiguous(dk, "dk", {a.B, a.n_src, a.H, a.d});
  check_contiguous(dv, "dv", {a.B, a.n_src, a.H, a.d});
  check_contiguous(p, "p", {a.B, a.E, a.H});
  check_contiguous(ds, "ds", {a.B, a.E, a.H});
  a.perm = ptr<int64_t>(perm, "perm");
  a.colptr = ptr<int64_t>(colptr, "colptr");
  a.out = ptr<T>(out, "out"), a.dout = ptr<T>(dout, "dout"), a.lse = ptr<A>(lse, "lse");
  a.dq = ptr<T>(dq, "dq"), a.dk = ptr<T>(dk, "dk"), a.dv = ptr<T>(dv, "dv");
  a.p = ptr<A>(p, "p"), a.ds = ptr<A>(ds, "ds");
  drv::graph_attention_backward(a, exec_arg(exec));
}

template <typename T>
hpcds::LayerNormParams<T> ln_params(const Array& x, const Array& scale, double eps) {
  hpcds::LayerNormParams<T> a{};
  if (x.ndim() != 3) fail("x: expected (B, N, C)");
  a.B = x.shape(0), a.N = x.shape(1), a.C = int(x.shape(2));
  a.eps = typename hpcds::Acc<T>::type(eps);
  check_contiguous(x, "x", {a.B, a.N, a.C});
  check_contiguous(scale, "scale", {a.B, a.C});
  a.x = ptr<T>(x, "x"), a.scale = ptr<T>(scale, "scale");
  return a;
}

template <typename T>
void ln_forward(const Array& x, const Array& scale, const Array& shift, const Array& y,
                const Array& mean, const Array& rstd, double eps, Exec exec) {
  using A = typename hpcds::Acc<T>::type;
  auto a = ln_params<T>(x, scale, eps);
  check_contiguous(shift, "shift", {a.B, a.C});
  check_contiguous(y, "y", {a.B, a.N, a.C});
  check_contiguous(mean, "mean", {a.B, a.N});
  check_contiguous(rstd, "rstd", {a.B, a.N});
  a.shift = ptr<T>(shift, "shift"), a.y = ptr<T>(y, "y");
  a.mean = ptr<A>(mean, "mean"), a.rstd = ptr<A>(rstd, "rstd");
  drv::layer_norm_forward(a, exec_arg(exec));
}

template <typename T>
void ln_backward(const Array& x, const Array& scale, const Array& dy, const Array& mean,
                 const Array& rstd, const Array& dx, const Array& dscale_part,
                 const Array& dshift_part, int64_t rows_per_chunk, Exec exec) {
  using A = typename hpcds::Acc<T>::type;
  auto a = ln_params<T>(x, scale, 0.0);
  if (rows_per_chunk < 1) fail("rows_per_chunk must be >= 1");
  const int64_t chunks = (a.N + rows_per_chunk - 1) / rows_per_chunk;
  check_contiguous(dy, "dy", {a.B, a.N, a.C});
  check_contiguous(mean, "mean", {a.B, a.N});
  check_contiguous(rstd, "rstd", {a.B, a.N});
  check_contiguous(dx, "dx", {a.B, a.N, a.C});
  check_contiguous(dscale_part, "dscale_part", {a.B, chunks, a.C});
  check_contiguous(dshift_part, "dshift_part", {a.B, chunks, a.C});
  a.dy = ptr<T>(dy, "dy"), a.mean = ptr<A>(mean, "mean"), a.rstd = ptr<A>(rstd, "rstd");
  a.dx = ptr<T>(dx, "dx");
  a.dscale_part = ptr<A>(dscale_part, "dscale_part");
  a.dshift_part = ptr<A>(dshift_part, "dshift_part");
  drv::layer_norm_backward(a, rows_per_chunk, exec_arg(exec));
}

// float32 or float64, chosen by the first array (the others are checked against it); the
// returned lambda has a concrete signature, which nanobind needs.
template <typename... Args>
auto by_dtype(void (*f32)(const Array&, Args...), void (*f64)(const Array&, Args...)) {
  return [=](const Array& first, Args... rest) {
    if (first.dtype() == nb::dtype<float>()) return f32(first, rest...);
    if (first.dtype() == nb::dtype<double>()) return f64(first, rest...);
    fail("only float32 and float64 are supported (cast other dtypes first)");
  };
}

// Graph attention for value type T with the index type of the senders (int32 or int64; the
// receivers must match, checked in ga_params): concrete signatures, for by_dtype.
bool index_is_int32(const Array& senders) {
  if (senders.dtype() == nb::dtype<int32_t>()) return true;
  if (senders.dtype() == nb::dtype<int64_t>()) return false;
  fail("senders: graph indices must be int32 or int64");
}

template <typename T>
void ga_forward_any(const Array& q, const Array& k, const Array& v, const Array& bias,
                    const Array& senders, const Array& receivers, const Array& rowptr,
                    const Array& out, const Array& lse, Exec exec) {
  (index_is_int32(senders) ? &ga_forward<T, int32_t> : &ga_forward<T, int64_t>)(
      q, k, v, bias, senders, receivers, rowptr, out, lse, exec);
}

template <typename T>
void ga_backward_any(const Array& q, const Array& k, const Array& v, const Array& bias,
                     const Array& senders, const Array& receivers, const Array& rowptr,
                     const Array& perm, const Array& colptr, const Array& out,
                     const Array& dout, const Array& lse, const Array& dq, const Array& dk,
                     const Array& dv, const Array& p, const Array& ds, Exec exec) {
  (index_is_int32(senders) ? &ga_backward<T, int32_t> : &ga_backward<T, int64_t>)(
      q, k, v, bias, senders, receivers, rowptr, perm, colptr, out, dout, lse, dq, dk, dv, p,
      ds, exec);
}

}  // namespace

NB_MODULE(HPCDS_MODULE, m) {
  m.doc() = "hpcds fused kernels (graph attention, modulated LayerNorm); see kernels/README.md";
  const auto release = nb::call_guard<nb::gil_scoped_release>();
  m.def("graph_attention_forward", by_dtype(&ga_forward_any<float>, &ga_forward_any<double>),
        release,
        "(q, k, v, edge_bias, senders, receivers, rowptr, out, lse, exec): fills out, lse; "
        "senders/receivers int32 or int64, rowptr int64");
  m.def("graph_attention_backward",
        by_dtype(&ga_backward_any<float>, &ga_backward_any<double>), release,
        "(q, k, v, edge_bias, senders, receivers, rowptr, perm, colptr, out, dout, lse, "
        "dq, dk, dv, p, ds, exec): fills dq, dk, dv, p, ds");
  m.def("layer_norm_forward", by_dtype(&ln_forward<float>, &ln_forward<double>), release,
        "(x, scale, shift, y, mean, rstd, eps, exec): fills y, mean, rstd");
  m.def("layer_norm_backward", by_dtype(&ln_backward<float>, &ln_backward<double>), release,
        "(x, scale, dy, mean, rstd, dx, dscale_part, dshift_part, rows_per_chunk, exec)");
#ifndef HPCDS_CUDA_MODULE
  m.def(
      "csc_order",
      [](const Array& senders, int64_t n_src, const Array& perm, const Array& colptr) {
        const int64_t E = senders.shape(0);
        check_contiguous(senders, "senders", {E});
        check_contiguous(perm, "perm", {E});
        check_contiguous(colptr, "colptr", {n_src + 1});
        int64_t* perm_p = ptr<int64_t>(perm, "perm");
        int64_t* colptr_p = ptr<int64_t>(colptr, "colptr");
        if (index_is_int32(senders))
          hpcds::cpu::csc_order(ptr<int32_t>(senders, "senders"), E, n_src, perm_p, colptr_p);
        else
          hpcds::cpu::csc_order(ptr<int64_t>(senders, "senders"), E, n_src, perm_p, colptr_p);
      },
      release,
      "(senders int32/int64, n_src, perm int64, colptr int64): source-sorted edge order "
      "(stable)");
#endif
}
