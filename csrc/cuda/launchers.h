// Raw-pointer launchers of the CUDA kernels. This header and the .cu files include no torch
// header, so nvcc can compile-check them against a CPU build of torch (HESSEXT_CUDA=CHECK);
// the glue in cuda/*.cpp unpacks tensors and passes the current stream.
#pragma once
#include <cstdint>

typedef struct CUstream_st* cudaStream_t;

namespace hessext {

// out[n, o, i] = sum_t d[n, t, o] a[n, t, i]; shapes and strides as in kernels/linear_weight_grad.h.
template <typename scalar_t>
void launch_linear_weight_grad(const scalar_t* a, int64_t a_stride_n, int64_t a_stride_t,
                               const scalar_t* d, int64_t d_stride_n, int64_t d_stride_t,
                               scalar_t* out, int64_t out_stride_n, int64_t N, int64_t T,
                               int64_t O, int64_t I, cudaStream_t stream);

}  // namespace hessext

namespace hessext {

// acc[r * acc_stride_r + s * acc_stride_s] (double) += alpha * sum_k a[k, r] b[k, s];
// a: [K, R] with strides (a_stride_k, a_stride_r), b: [K, S] likewise.
template <typename scalar_t>
void launch_gemm_accumulate(double* acc, int64_t acc_stride_r, int64_t acc_stride_s,
                            const scalar_t* a, int64_t a_stride_k, int64_t a_stride_r,
                            const scalar_t* b, int64_t b_stride_k, int64_t b_stride_s,
                            int64_t K, int64_t R, int64_t S, double alpha, cudaStream_t stream);

}  // namespace hessext
