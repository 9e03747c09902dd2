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

// (G v)[n, m] = sum_{o,i} d[n, o] a[n, i] v[o*I + i, m]. Two groupings, same flops; the one with
// the smaller per-sample intermediate is used (memory-bound GEMMs otherwise dominate):
//   I <= O:  t = d @ v viewed [O, I*M]   ([nb, I*M]), then a_n . t_n per sample;
//   I >  O:  t = a @ v permuted [I, O*M] ([nb, O*M]), then d_n . t_n per sample.
at::Tensor linear_ghost_matvec_cpu(const at::Tensor& a_in, const at::Tensor& d_in,
                                   const at::Tensor& v_in) {
  check_linear_ghost_matvec_args(a_in, d_in, v_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  const int64_t M = v_in.size(1);
  const auto a = a_in.contiguous(), d = d_in.contiguous(), v = v_in.contiguous();
  auto out = at::zeros({N, M}, a.options());
  if (N == 0 || M == 0 || O * I == 0) return out;
  const bool via_d = I <= O;
  const auto first = via_d ? d : a;    // multiplies v
  const auto second = via_d ? a : d;   // contracted per sample afterwards
  const int64_t K2 = via_d ? I : O;
  const auto v_rows = via_d ? v.view({O, I * M})
                            : v.view({O, I, M}).permute({1, 0, 2}).reshape({I, O * M});
  const int64_t nb = sample_block(N, K2 * M);
  for (int64_t s = 0; s < N; s += nb) {
    const int64_t len = std::min(nb, N - s);
    auto tmp = at::mm(first.narrow(0, s, len), v_rows).view({len, K2, M});
    auto out_block = out.narrow(0, s, len).unsqueeze(1);
    at::bmm_out(out_block, second.narrow(0, s, len).unsqueeze(1), tmp);
  }
  return out;
}

// (G^T u)[(o, i), m] = sum_n d[n, o] a[n, i] u[n, m], accumulated over sample blocks, with the
// smaller intermediate as in matvec:
//   I <= O:  d^T @ (a (x) u)   -> [O, I*M], already in the output layout;
//   I >  O:  (d (x) u)^T @ a   -> [O*M, I], permuted to [O, I, M] once at the end.
at::Tensor linear_ghost_rmatvec_cpu(const at::Tensor& a_in, const at::Tensor& d_in,
                                    const at::Tensor& u_in) {
  check_linear_ghost_rmatvec_args(a_in, d_in, u_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  const int64_t M = u_in.size(1);
  const auto a = a_in.contiguous(), d = d_in.contiguous(), u = u_in.contiguous();
  if (N == 0 || M == 0 || O * I == 0) return at::zeros({O * I, M}, a.options());
  const bool via_a = I <= O;
  const auto scaled = via_a ? a : d;   // multiplied by u per sample
  const auto other = via_a ? d : a;
  const int64_t K = via_a ? I : O;
  auto acc = at::zeros({via_a ? O : O * M, via_a ? I * M : I}, a.options());
  const int64_t nb = sample_block(N, K * M);
  for (int64_t s = 0; s < N; s += nb) {
    const int64_t len = std::min(nb, N - s);
    auto su = (scaled.narrow(0, s, len).unsqueeze(2) * u.narrow(0, s, len).unsqueeze(1))
                  .view({len, K * M});
    if (via_a) {
      acc.addmm_(other.narrow(0, s, len).t(), su);
    } else {
      acc.addmm_(su.t(), other.narrow(0, s, len));
    }
  }
  if (via_a) return acc.view({O * I, M});
  return acc.view({O, M, I}).permute({0, 2, 1}).reshape({O * I, M});
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
