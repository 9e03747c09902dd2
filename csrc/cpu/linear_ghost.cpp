// CPU implementations of the Linear ghost contractions (formulas in kernels/linear_ghost.h).
// Every contraction is a GEMM over samples in blocks, so the intermediate memory is bounded by
// kGhostBlockElems elements whatever N is, and nothing of size N x (O*I) is ever formed.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"

namespace hessext {
namespace {

constexpr int64_t kGhostBlockElems = int64_t(1) << 22;  // 32 MiB in float64

int64_t sample_block(int64_t N, int64_t per_sample) {
  return std::max<int64_t>(1, std::min<int64_t>(N, kGhostBlockElems / std::max<int64_t>(1, per_sample)));
}

// (G v)[n, m] = a_n^T (sum_o d[n, o] V_o) with V_o = v[o*I:(o+1)*I, :]: first d_block @ v viewed
// [O, I*M], then one batched dot with a per sample.
at::Tensor linear_ghost_matvec_cpu(const at::Tensor& a_in, const at::Tensor& d_in,
                                   const at::Tensor& v_in) {
  check_linear_ghost_args("linear_ghost_matvec", a_in, d_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  TORCH_CHECK(v_in.dim() == 2 && v_in.size(0) == O * I,
              "linear_ghost_matvec: v must be [O*I, M] = [", O * I, ", M], got ", v_in.sizes());
  check_float_same("linear_ghost_matvec", {&a_in, &v_in});
  const int64_t M = v_in.size(1);
  const auto a = a_in.contiguous(), d = d_in.contiguous(), v = v_in.contiguous();
  auto out = at::zeros({N, M}, a.options());
  if (N == 0 || M == 0 || O * I == 0) return out;
  const auto v_rows = v.view({O, I * M});
  const int64_t nb = sample_block(N, I * M);
  for (int64_t s = 0; s < N; s += nb) {
    const int64_t len = std::min(nb, N - s);
    auto tmp = at::mm(d.narrow(0, s, len), v_rows).view({len, I, M});
    auto out_block = out.narrow(0, s, len).unsqueeze(1);
    at::bmm_out(out_block, a.narrow(0, s, len).unsqueeze(1), tmp);
  }
  return out;
}

// (G^T u)[(o, i), m] = sum_n d[n, o] (a[n, i] u[n, m]): d^T @ (a (x) u), accumulated over
// sample blocks.
at::Tensor linear_ghost_rmatvec_cpu(const at::Tensor& a_in, const at::Tensor& d_in,
                                    const at::Tensor& u_in) {
  check_linear_ghost_args("linear_ghost_rmatvec", a_in, d_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  TORCH_CHECK(u_in.dim() == 2 && u_in.size(0) == N,
              "linear_ghost_rmatvec: u must be [N, M] with N = ", N, ", got ", u_in.sizes());
  check_float_same("linear_ghost_rmatvec", {&a_in, &u_in});
  const int64_t M = u_in.size(1);
  const auto a = a_in.contiguous(), d = d_in.contiguous(), u = u_in.contiguous();
  auto out = at::zeros({O * I, M}, a.options());
  if (N == 0 || M == 0 || O * I == 0) return out;
  auto out_rows = out.view({O, I * M});
  const int64_t nb = sample_block(N, I * M);
  for (int64_t s = 0; s < N; s += nb) {
    const int64_t len = std::min(nb, N - s);
    auto au = (a.narrow(0, s, len).unsqueeze(2) * u.narrow(0, s, len).unsqueeze(1))
                  .view({len, I * M});
    out_rows.addmm_(d.narrow(0, s, len).t(), au);
  }
  return out;
}

at::Tensor linear_ghost_sqnorms_cpu(const at::Tensor& a, const at::Tensor& d) {
  check_linear_ghost_args("linear_ghost_sqnorms", a, d);
  return a.square().sum(1) * d.square().sum(1);
}

at::Tensor linear_ghost_gram_cpu(const at::Tensor& a, const at::Tensor& d) {
  check_linear_ghost_args("linear_ghost_gram", a, d);
  return at::mm(a, a.t()).mul_(at::mm(d, d.t()));
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("linear_ghost_matvec", &linear_ghost_matvec_cpu);
  m.impl("linear_ghost_rmatvec", &linear_ghost_rmatvec_cpu);
  m.impl("linear_ghost_sqnorms", &linear_ghost_sqnorms_cpu);
  m.impl("linear_ghost_gram", &linear_ghost_gram_cpu);
}

}  // namespace hessext
