// CUDA glue for hessext::kfac_factors and hessext::ekfac_correction: checks, tensor unpacking,
// current stream. The products of kfac_factors run on the float64-accumulating GEMM of
// gemm_accumulate; ekfac_correction rotates and square-accumulates with the kernels of kfac.cu.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/launchers.h"

namespace hessext {
namespace {

void kfac_factors_cuda(const at::Tensor& a, const at::Tensor& g, at::Tensor A, at::Tensor S,
                       bool append_one) {
  check_kfac_factors_args(a, g, A, S, append_one);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t K = a.size(0), I = a.size(1), Kg = g.size(0), O = g.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kfac_factors_cuda", [&] {
    if (K > 0 && I > 0) {
      launch_gemm_accumulate<scalar_t>(A.data_ptr<double>(), A.stride(0), 1, a.data_ptr<scalar_t>(),
                                       a.stride(0), a.stride(1), a.data_ptr<scalar_t>(), a.stride(0),
                                       a.stride(1), K, I, I, 1.0, stream);
    }
    if (Kg > 0 && O > 0) {
      launch_gemm_accumulate<scalar_t>(S.data_ptr<double>(), S.stride(0), 1, g.data_ptr<scalar_t>(),
                                       g.stride(0), g.stride(1), g.data_ptr<scalar_t>(), g.stride(0),
                                       g.stride(1), Kg, O, O, 1.0, stream);
    }
    if (append_one && K > 0) {
      launch_kfac_bias_row<scalar_t>(a.data_ptr<scalar_t>(), a.stride(0), a.stride(1),
                                     A.data_ptr<double>(), K, I, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void ekfac_correction_cuda(const at::Tensor& a_in, const at::Tensor& g_in, const at::Tensor& qa_in,
                           const at::Tensor& qs_in, at::Tensor lam, bool append_one) {
  check_ekfac_correction_args(a_in, g_in, qa_in, qs_in, lam, append_one);
  const c10::cuda::CUDAGuard guard(lam.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = a_in.size(0), T = a_in.size(1), I = a_in.size(2), O = g_in.size(2);
  const int64_t Ia = qa_in.size(0);
  if (N == 0 || T == 0 || O == 0 || Ia == 0) return;
  const int64_t R = g_in.size(0) / N;
  const auto a = a_in.contiguous(), g = g_in.contiguous();
  const auto qa = qa_in.contiguous(), qs = qs_in.contiguous();
  auto at_ = at::empty({N, T, Ia}, a.options());
  auto gt = at::empty({R * N, T, O}, g.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ekfac_correction_cuda", [&] {
    launch_kfac_rotate<scalar_t>(a.data_ptr<scalar_t>(), qa.data_ptr<scalar_t>(),
                                 at_.data_ptr<scalar_t>(), N * T, I, Ia, stream);
    launch_kfac_rotate<scalar_t>(g.data_ptr<scalar_t>(), qs.data_ptr<scalar_t>(),
                                 gt.data_ptr<scalar_t>(), R * N * T, O, O, stream);
    launch_ekfac_square_accumulate<scalar_t>(gt.data_ptr<scalar_t>(), at_.data_ptr<scalar_t>(),
                                             lam.data_ptr<double>(), R, N, T, O, Ia, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("kfac_factors", &kfac_factors_cuda);
  m.impl("ekfac_correction", &ekfac_correction_cuda);
}

}  // namespace hessext
