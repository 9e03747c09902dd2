// CPU implementation of hessext::gemm_accumulate (schema in registration.cpp):
//   acc[R, S] (float64) += alpha * a[K, R]^T b[K, S]
// The product is one BLAS call at the inputs' precision (float32 products run at the float32
// matrix-multiply rate); only the K-summed tile is widened to float64, so the float64 cost is
// O(R S) per call while the product is O(K R S).
// No temporary the size of acc: float64 products go straight into acc (BLAS with beta = 1
// writes a strided view with unit column stride in place: a strip of the Hessian), float32
// ones in row blocks of at most kRowBlockElems entries (a strip of the 916 MB Hessian of the
// decision-boundary MLP is 44 MB as one float32 product; in blocks, 8 MB at most).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"

namespace hessext {
namespace {

constexpr int64_t kRowBlockElems = int64_t(1) << 21;

bool blas_writable(const at::Tensor& t) {
  return t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1));
}

void gemm_accumulate_cpu(at::Tensor acc, const at::Tensor& a, const at::Tensor& b, double alpha) {
  check_gemm_accumulate_args(acc, a, b);
  if (acc.numel() == 0 || a.size(0) == 0) return;
  if (a.scalar_type() == at::kDouble && blas_writable(acc)) {
    acc.addmm_(a.t(), b, /*beta=*/1.0, /*alpha=*/alpha);
    return;
  }
  // add_ widens the float32 product element by element: no float64 copy of the tile
  const int64_t R = acc.size(0), S = acc.size(1);
  const int64_t rows = std::max<int64_t>(1, kRowBlockElems / std::max<int64_t>(1, S));
  for (int64_t r0 = 0; r0 < R; r0 += rows) {
    const int64_t n = std::min(rows, R - r0);
    acc.narrow(0, r0, n).add_(at::mm(a.narrow(1, r0, n).t(), b), alpha);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("gemm_accumulate", &gemm_accumulate_cpu);
}

}  // namespace hessext
