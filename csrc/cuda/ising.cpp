// CUDA glue for hessext::ising_sweeps: checks (shared with the CPU kernel), tensor unpacking,
// current stream. Metropolis only: Wolff is refused here (hessext.ops.ising_sweeps runs it on
// the pure-torch path for CUDA tensors).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/launchers.h"

namespace hessext {
namespace {

std::tuple<at::Tensor, at::Tensor> ising_sweeps_cuda(const at::Tensor& spins_in,
                                                     const at::Tensor& thresholds_in,
                                                     int64_t n_sweeps, int64_t seed,
                                                     int64_t sweep_offset, bool wolff,
                                                     int64_t clusters_per_sweep, bool record) {
  check_ising_sweeps_args(spins_in, thresholds_in, n_sweeps, sweep_offset, clusters_per_sweep);
  TORCH_CHECK(!wolff, "ising_sweeps: the Wolff algorithm has no CUDA kernel (its cluster "
              "growth is sequential); call hessext.ising_sweeps, which runs it on the torch path");
  const c10::cuda::CUDAGuard guard(spins_in.device());
  auto spins = spins_in.contiguous().clone();
  const auto thresholds = thresholds_in.contiguous();
  const int64_t B = spins.size(0);
  auto series = at::empty({B, record ? n_sweeps : 0, 2}, spins.options().dtype(at::kDouble));
  launch_ising_metropolis(spins.data_ptr<int8_t>(), thresholds.data_ptr<int64_t>(), B,
                          spins.size(1), n_sweeps, uint64_t(seed), sweep_offset,
                          record ? series.data_ptr<double>() : nullptr,
                          c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {spins, series};
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("ising_sweeps", &ising_sweeps_cuda);
}

}  // namespace hessext
