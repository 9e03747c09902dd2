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

// Stein sampler: out [B, A, P, D] = x [B, D] +- s z (A = 2) or + s z (A = 1); z from
// philox::normals4 keyed by (seed, point_offset + b, pair_offset + j).
template <typename scalar_t>
void launch_stein_perturb(const scalar_t* x, scalar_t* out, uint64_t seed, int64_t point_offset,
                          int64_t pair_offset, int64_t B, int64_t P, int64_t D, int64_t A,
                          scalar_t s, cudaStream_t stream);

// z [P, D] (contiguous) for pairs pair_offset .. pair_offset + P of one point.
template <typename scalar_t>
void launch_stein_directions(scalar_t* z, uint64_t seed, int64_t point, int64_t pair_offset,
                             int64_t P, int64_t D, cudaStream_t stream);

// ---- per-sample gradients (shapes in kernels/conv_weight_grad.h, bias_grad.h, linear_ghost.h)

struct ConvGeometry;

// out[n, o, c, kh, kw] (per-sample block stride out_stride_n) from contiguous x and d.
template <typename scalar_t>
void launch_conv_weight_grad(const scalar_t* x, const scalar_t* d, scalar_t* out,
                             int64_t out_stride_n, int64_t N, const ConvGeometry& g,
                             cudaStream_t stream);

// out[n, o] = sum_t d[n, t, o], d read through its strides.
template <typename scalar_t>
void launch_bias_grad(const scalar_t* d, int64_t d_stride_n, int64_t d_stride_t,
                      int64_t d_stride_o, scalar_t* out, int64_t out_stride_n, int64_t N,
                      int64_t T, int64_t O, cudaStream_t stream);

// All contiguous: a [N, I], d [N, O], v [O*I, M] -> out [N, M].
template <typename scalar_t>
void launch_linear_ghost_matvec(const scalar_t* a, const scalar_t* d, const scalar_t* v,
                                scalar_t* out, int64_t N, int64_t O, int64_t I, int64_t M,
                                cudaStream_t stream);

// All contiguous: a [N, I], d [N, O], u [N, M] -> out [O*I, M].
template <typename scalar_t>
void launch_linear_ghost_rmatvec(const scalar_t* a, const scalar_t* d, const scalar_t* u,
                                 scalar_t* out, int64_t N, int64_t O, int64_t I, int64_t M,
                                 cudaStream_t stream);

// y [N, O, Ho, Wo] = direct convolution of contiguous x and w, plus bias (null: none).
template <typename scalar_t>
void launch_conv_forward(const scalar_t* x, const scalar_t* w, const scalar_t* bias, scalar_t* y,
                         int64_t N, const ConvGeometry& g, cudaStream_t stream);

// Max pooling with window == stride over `planes` contiguous [H, W] planes (kernels/max_pool.h):
// y, idx [planes, H/kH, W/kW]; backward: dx [planes, H, W] from dy and idx.
template <typename scalar_t>
void launch_max_pool_forward(const scalar_t* x, scalar_t* y, uint8_t* idx, int64_t planes,
                             int64_t H, int64_t W, int64_t kH, int64_t kW, cudaStream_t stream);
template <typename scalar_t>
void launch_max_pool_backward(const scalar_t* dy, const uint8_t* idx, scalar_t* dx,
                              int64_t planes, int64_t H, int64_t W, int64_t kH, int64_t kW,
                              cudaStream_t stream);

// All contiguous: a [N, I], d [N, O] -> out [N] (squared norms) or [N, N] (Gram).
template <typename scalar_t>
void launch_linear_ghost_sqnorms(const scalar_t* a, const scalar_t* d, scalar_t* out, int64_t N,
                                 int64_t O, int64_t I, cudaStream_t stream);
template <typename scalar_t>
void launch_linear_ghost_gram(const scalar_t* a, const scalar_t* d, scalar_t* out, int64_t N,
                              int64_t O, int64_t I, cudaStream_t stream);

// 2-D Ising Metropolis (kernels/ising.h): n_sweeps checkerboard sweeps in place of spins
// [B, L, L] int8 (contiguous), thresholds [B, 3] int64 on the device; series [B, n_sweeps, 2]
// (m, e after each sweep) unless null.
void launch_ising_metropolis(int8_t* spins, const int64_t* thresholds, int64_t B, int64_t L,
                             int64_t n_sweeps, uint64_t seed, int64_t sweep_offset,
                             double* series, cudaStream_t stream);

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

namespace hessext {

// ---- K-FAC (kernels/kfac.h) -------------------------------------------------------------------

// A [(I+1), (I+1)] (contiguous float64): row and column I += column sums of a [K, I]
// (strides a_stride_k, a_stride_i), corner += K.
template <typename scalar_t>
void launch_kfac_bias_row(const scalar_t* a, int64_t a_stride_k, int64_t a_stride_i, double* A,
                          int64_t K, int64_t I, cudaStream_t stream);

// out [rows, Lq] = [x, 1] q (the 1 appended when Lq = L + 1); x [rows, L], q [Lq, Lq], all
// contiguous.
template <typename scalar_t>
void launch_kfac_rotate(const scalar_t* x, const scalar_t* q, scalar_t* out, int64_t rows,
                        int64_t L, int64_t Lq, cudaStream_t stream);

// lam [O, Ia] (float64) += sum_{r, n} (gt[r, n]^T at[n])^2 for contiguous rotated gradients
// gt [R*N, T, O] and inputs at [N, T, Ia].
template <typename scalar_t>
void launch_ekfac_square_accumulate(const scalar_t* gt, const scalar_t* at, double* lam,
                                    int64_t R, int64_t N, int64_t T, int64_t O, int64_t Ia,
                                    cudaStream_t stream);

}  // namespace hessext
