// CPU implementation of hessext::gemm_accumulate (schema in registration.cpp):
//   acc[R, S] (float64) += alpha * a[K, R]^T b[K, S]
// The product is one BLAS call at the inputs' precision (float32 products run at the float32
// matrix-multiply rate); only the K-summed tile is widened to float64, so the float64 cost is
// O(R S) per call while the product is O(K R S).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"

namespace hessext {
namespace {

void gemm_accumulate_cpu(at::Tensor acc, const at::Tensor& a, const at::Tensor& b, double alpha) {
  check_gemm_accumulate_args(acc, a, b);
  if (acc.numel() == 0 || a.size(0) == 0) return;
  if (a.scalar_type() == at::kDouble) {
    // float64 inputs: BLAS can add into acc directly (beta = 1), no temporary tile
    if (acc.is_contiguous()) {
      acc.addmm_(a.t(), b, /*beta=*/1.0, /*alpha=*/alpha);
      return;
    }
  }
  // add_ widens the float32 product element by element: no float64 copy of the tile
  acc.add_(at::mm(a.t(), b), alpha);
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("gemm_accumulate", &gemm_accumulate_cpu);
}

}  // namespace hessext
