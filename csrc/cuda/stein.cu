// CUDA kernels of the Stein sampler: the direction generator and the perturbation, one thread
// per (point, pair, coordinate block) running the same Philox/Box-Muller body as the CPU
// (kernels/philox.h), so both devices draw the same z bit for bit.
#include <cuda_runtime.h>

#include "cuda/launchers.h"
#include "kernels/stein.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void stein_perturb_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                     uint64_t seed, int64_t point_offset, int64_t pair_offset,
                                     int64_t B, int64_t P, int64_t D, int64_t A, scalar_t s) {
  const int64_t Q = (D + 3) / 4;
  const int64_t total = B * P * Q;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = k % Q, j = (k / Q) % P, b = k / (Q * P);
    scalar_t* plus = out + ((b * A) * P + j) * D;
    scalar_t* minus = A == 2 ? plus + P * D : nullptr;
    stein_perturb_block<scalar_t>(seed, uint64_t(point_offset + b), uint64_t(pair_offset + j),
                                  q, D, s, x + b * D, plus, minus);
  }
}

// z[b, j, :] for the pairs of one tile, written as scalar_t rows of length D.
template <typename scalar_t>
__global__ void stein_directions_kernel(scalar_t* __restrict__ z, uint64_t seed, int64_t point,
                                        int64_t pair_offset, int64_t P, int64_t D) {
  const int64_t Q = (D + 3) / 4;
  const int64_t total = P * Q;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = k % Q, j = k / Q;
    stein_direction_block<scalar_t>(seed, uint64_t(point), uint64_t(pair_offset + j), q, D,
                                    z + j * D);
  }
}

int blocks_for(int64_t total, int threads) {
  const int64_t want = (total + threads - 1) / threads;
  return int(want < 65535 ? want : 65535);
}

}  // namespace

template <typename scalar_t>
void launch_stein_perturb(const scalar_t* x, scalar_t* out, uint64_t seed, int64_t point_offset,
                          int64_t pair_offset, int64_t B, int64_t P, int64_t D, int64_t A,
                          scalar_t s, cudaStream_t stream) {
  const int64_t total = B * P * ((D + 3) / 4);
  if (total == 0) return;
  stein_perturb_kernel<scalar_t><<<blocks_for(total, 256), 256, 0, stream>>>(
      x, out, seed, point_offset, pair_offset, B, P, D, A, s);
}

template <typename scalar_t>
void launch_stein_directions(scalar_t* z, uint64_t seed, int64_t point, int64_t pair_offset,
                             int64_t P, int64_t D, cudaStream_t stream) {
  const int64_t total = P * ((D + 3) / 4);
  if (total == 0) return;
  stein_directions_kernel<scalar_t><<<blocks_for(total, 256), 256, 0, stream>>>(
      z, seed, point, pair_offset, P, D);
}

template void launch_stein_perturb<float>(const float*, float*, uint64_t, int64_t, int64_t,
                                          int64_t, int64_t, int64_t, int64_t, float,
                                          cudaStream_t);
template void launch_stein_perturb<double>(const double*, double*, uint64_t, int64_t, int64_t,
                                           int64_t, int64_t, int64_t, int64_t, double,
                                           cudaStream_t);
template void launch_stein_directions<float>(float*, uint64_t, int64_t, int64_t, int64_t,
                                             int64_t, cudaStream_t);
template void launch_stein_directions<double>(double*, uint64_t, int64_t, int64_t, int64_t,
                                              int64_t, cudaStream_t);

}  // namespace hessext
