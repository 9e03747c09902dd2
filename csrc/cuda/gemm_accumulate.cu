// CUDA kernel for hessext::gemm_accumulate: acc (float64) += alpha * a^T b.
// A plain shared-memory tiled GEMM (TILE x TILE outputs per block, one per thread). Each thread
// sums a K-panel of TILE products at the inputs' precision, then adds the panel sum into a
// float64 register: products at model precision, accumulation across panels (and into acc) in
// float64, the same split the CPU kernel makes between the BLAS call and the tile update.
#include <cuda_runtime.h>

#include "cuda/launchers.h"

namespace hessext {
namespace {

constexpr int TILE = 16;

template <typename scalar_t>
__global__ void gemm_accumulate_kernel(double* __restrict__ acc, int64_t acc_sr, int64_t acc_ss,
                                       const scalar_t* __restrict__ a, int64_t a_sk, int64_t a_sr,
                                       const scalar_t* __restrict__ b, int64_t b_sk, int64_t b_ss,
                                       int64_t K, int64_t R, int64_t S, double alpha) {
  __shared__ scalar_t a_tile[TILE][TILE + 1];  // [k][r], +1 avoids bank conflicts
  __shared__ scalar_t b_tile[TILE][TILE + 1];  // [k][s]
  const int64_t r = int64_t(blockIdx.y) * TILE + threadIdx.y;
  const int64_t s = int64_t(blockIdx.x) * TILE + threadIdx.x;
  double total = 0.0;
  for (int64_t k0 = 0; k0 < K; k0 += TILE) {
    // thread (ty, tx) loads a[k0 + ty, block_r + tx] and b[k0 + ty, block_s + tx]
    const int64_t k = k0 + threadIdx.y;
    const int64_t ra = int64_t(blockIdx.y) * TILE + threadIdx.x;
    const int64_t sb = int64_t(blockIdx.x) * TILE + threadIdx.x;
    a_tile[threadIdx.y][threadIdx.x] = (k < K && ra < R) ? a[k * a_sk + ra * a_sr] : scalar_t(0);
    b_tile[threadIdx.y][threadIdx.x] = (k < K && sb < S) ? b[k * b_sk + sb * b_ss] : scalar_t(0);
    __syncthreads();
    scalar_t panel = scalar_t(0);
#pragma unroll
    for (int kk = 0; kk < TILE; ++kk) panel += a_tile[kk][threadIdx.y] * b_tile[kk][threadIdx.x];
    total += double(panel);
    __syncthreads();
  }
  if (r < R && s < S) acc[r * acc_sr + s * acc_ss] += alpha * total;
}

}  // namespace

template <typename scalar_t>
void launch_gemm_accumulate(double* acc, int64_t acc_stride_r, int64_t acc_stride_s,
                            const scalar_t* a, int64_t a_stride_k, int64_t a_stride_r,
                            const scalar_t* b, int64_t b_stride_k, int64_t b_stride_s,
                            int64_t K, int64_t R, int64_t S, double alpha, cudaStream_t stream) {
  if (R == 0 || S == 0) return;
  const dim3 threads(TILE, TILE);
  const dim3 blocks(unsigned((S + TILE - 1) / TILE), unsigned((R + TILE - 1) / TILE));
  gemm_accumulate_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
      acc, acc_stride_r, acc_stride_s, a, a_stride_k, a_stride_r, b, b_stride_k, b_stride_s, K, R,
      S, alpha);
}

template void launch_gemm_accumulate<float>(double*, int64_t, int64_t, const float*, int64_t,
                                            int64_t, const float*, int64_t, int64_t, int64_t,
                                            int64_t, int64_t, double, cudaStream_t);
template void launch_gemm_accumulate<double>(double*, int64_t, int64_t, const double*, int64_t,
                                             int64_t, const double*, int64_t, int64_t, int64_t,
                                             int64_t, int64_t, double, cudaStream_t);

}  // namespace hessext
