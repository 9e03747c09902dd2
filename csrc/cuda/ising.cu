// CUDA kernel of hessext::ising_sweeps, Metropolis: one launch per independent set of a sweep
// (the checkerboard colours; six sets for odd L, kernels/ising.h), one thread per (chain, site),
// running the site update shared with the CPU, so both devices give the same bits. Wolff's
// cluster growth is sequential per chain and has no CUDA kernel (hessext/ops sends it to the
// pure-torch path).
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/ising.h"

namespace hessext {
namespace {

__global__ void ising_metropolis_phase_kernel(int8_t* __restrict__ spins,
                                              const int64_t* __restrict__ thresholds, int64_t B,
                                              int64_t L, uint64_t seed, uint32_t sweep,
                                              int phase) {
  const int64_t N = L * L;
  HESSEXT_GRID_STRIDE(k, B * N) {
    const int64_t b = k / N, site = k % N, i = site / L, j = site % L;
    if (ising::phase_of(i, j, L) != phase) continue;
    const uint32_t word = ising::metropolis_word(seed, uint32_t(b), sweep, site);
    ising::metropolis_site(spins + b * N, L, i, j, word, uint32_t(thresholds[3 * b]),
                           uint32_t(thresholds[3 * b + 1]));
  }
}

// One thread per chain: (m, e) after sweep t into series[b, t].
__global__ void ising_observables_kernel(const int8_t* __restrict__ spins, int64_t B, int64_t L,
                                         double* __restrict__ series, int64_t n_sweeps,
                                         int64_t t) {
  HESSEXT_GRID_STRIDE(b, B) {
    double* out = series + (b * n_sweeps + t) * 2;
    ising::chain_observables(spins + b * L * L, L, out, out + 1);
  }
}

}  // namespace

void launch_ising_metropolis(int8_t* spins, const int64_t* thresholds, int64_t B, int64_t L,
                             int64_t n_sweeps, uint64_t seed, int64_t sweep_offset,
                             double* series, cudaStream_t stream) {
  const int64_t total = B * L * L;
  if (total == 0) return;
  for (int64_t t = 0; t < n_sweeps; ++t) {
    for (int phase = 0; phase < ising::n_phases(L); ++phase) {
      // odd L: sets 1, 2, 4, 5 are the wrapping row and column only; the grid covers all sites
      ising_metropolis_phase_kernel<<<grid_for(total), kThreads, 0, stream>>>(
          spins, thresholds, B, L, seed, uint32_t(sweep_offset + t), phase);
    }
    if (series != nullptr) {
      ising_observables_kernel<<<grid_for(B), kThreads, 0, stream>>>(spins, B, L, series,
                                                                     n_sweeps, t);
    }
  }
}

}  // namespace hessext
