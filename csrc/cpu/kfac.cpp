// CPU implementations of hessext::kfac_factors and hessext::ekfac_correction (formulas in
// kernels/kfac.h). Every product is a BLAS call at the inputs' precision over a bounded panel of
// rows; only the panel sums are widened to float64, so the float64 work is O(I'^2 + O^2) per
// panel while the products are O(K (I'^2 + O^2)) — the split gemm_accumulate makes.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"

namespace hessext {
namespace {

// rows per float32 panel: bounds the float32 summation length inside one product
constexpr int64_t kPanelRows = 2048;
// elements of the per-example rotated gradients held at once (T > 1): 32 MiB in float64
constexpr int64_t kBlockElems = int64_t(1) << 22;

// acc (float64 [L, L], any strides) += x^T x for x [K, L], panel by panel.
void accumulate_gram(at::Tensor acc, const at::Tensor& x) {
  const int64_t K = x.size(0);
  if (K == 0 || x.size(1) == 0) return;
  for (int64_t s = 0; s < K; s += kPanelRows) {
    const auto xs = x.narrow(0, s, std::min(kPanelRows, K - s));
    if (x.scalar_type() == at::kDouble) {
      acc.addmm_(xs.t(), xs);
    } else {
      acc.add_(at::mm(xs.t(), xs));  // widened element by element: no float64 copy of x
    }
  }
}

void kfac_factors_cpu(const at::Tensor& a, const at::Tensor& g, at::Tensor A, at::Tensor S,
                      bool append_one) {
  check_kfac_factors_args(a, g, A, S, append_one);
  const int64_t K = a.size(0), I = a.size(1);
  accumulate_gram(A.narrow(0, 0, I).narrow(1, 0, I), a);
  accumulate_gram(S, g);
  if (append_one && K > 0) {
    // the bias row and column: sums of the inputs (in float64), and the count in the corner
    const auto sums = a.sum(0, /*keepdim=*/false, at::kDouble);
    A.select(0, I).narrow(0, 0, I).add_(sums);
    A.select(1, I).narrow(0, 0, I).add_(sums);
    A.select(0, I).select(0, I).add_(double(K));
  }
}

// x [.., L] rotated by q [L', L'] with an appended 1 when L' = L + 1: [x, 1] q.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& q) {
  const int64_t L = x.size(-1);
  auto out = at::matmul(x, q.narrow(0, 0, L));
  if (q.size(0) > L) out.add_(q.select(0, L));
  return out;
}

void ekfac_correction_cpu(const at::Tensor& a, const at::Tensor& g, const at::Tensor& qa,
                          const at::Tensor& qs, at::Tensor lam, bool append_one) {
  check_ekfac_correction_args(a, g, qa, qs, lam, append_one);
  const int64_t N = a.size(0), T = a.size(1), O = g.size(2), Ia = qa.size(0);
  if (N == 0 || T == 0 || O == 0 || Ia == 0) return;
  const int64_t R = g.size(0) / N;
  const auto at_ = rotate(a, qa).contiguous();  // [N, T, I']
  const auto gt = at::matmul(g, qs).contiguous();  // [R*N, T, O]
  if (T == 1) {
    // rank-one per-example gradients: lam += (sum_r g~^2)^T a~^2
    const auto a2 = at_.view({N, Ia}).square();
    const auto g2 = gt.view({R, N, O}).square().sum(0);
    for (int64_t s = 0; s < N; s += kPanelRows) {
      const int64_t len = std::min(kPanelRows, N - s);
      lam.add_(at::mm(g2.narrow(0, s, len).t(), a2.narrow(0, s, len)));
    }
    return;
  }
  // one rotated [O, I'] gradient per example and replica, a block of examples at a time
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(N, kBlockElems / (O * Ia)));
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t s = 0; s < N; s += block) {
      const int64_t len = std::min(block, N - s);
      auto m = at::bmm(gt.narrow(0, r * N + s, len).transpose(1, 2), at_.narrow(0, s, len));
      lam.add_(m.square_().sum(0, /*keepdim=*/false, at::kDouble));
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("kfac_factors", &kfac_factors_cpu);
  m.impl("ekfac_correction", &ekfac_correction_cpu);
}

}  // namespace hessext
