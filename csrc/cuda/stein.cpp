// CUDA glue of the Stein sampler ops: checks, tensor unpacking, current stream. The tile
// products use cuBLAS through at::mm on fixed tile shapes, one tile at a time, so that every
// tile rounds the same way whatever the chunking; tiles are added into the float64
// accumulators in tile order (deterministic, as on the CPU).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "cuda/launchers.h"

namespace hessext {
namespace {

at::Tensor stein_perturb_cuda(const at::Tensor& x_in, double sigma, int64_t seed,
                              int64_t point_offset, int64_t pair_offset, int64_t n_pairs,
                              bool antithetic) {
  check_stein_perturb_args(x_in, sigma, seed, point_offset, pair_offset, n_pairs);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), A = antithetic ? 2 : 1;
  auto out = at::empty({B, A, n_pairs, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stein_perturb_cuda", [&] {
    launch_stein_perturb<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                   uint64_t(seed), point_offset, pair_offset, B, n_pairs, D, A,
                                   scalar_t(std::sqrt(sigma)), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void stein_accumulate_cuda(const at::Tensor& h_in, at::Tensor hess_acc, at::Tensor grad_acc,
                           int64_t seed, int64_t point_offset, int64_t pair_offset,
                           int64_t tile_pairs, const c10::optional<at::Tensor>& z_in) {
  check_stein_accumulate_args(h_in, hess_acc, grad_acc, point_offset, pair_offset, tile_pairs);
  if (z_in.has_value()) check_stein_directions_arg(h_in, hess_acc, *z_in);
  const c10::cuda::CUDAGuard guard(h_in.device());
  const auto h = h_in.contiguous();
  const int64_t B = h.size(0), A = h.size(1), P = h.size(2), K = h.size(3);
  const int64_t M = hess_acc.size(1), D = hess_acc.size(2);
  if (B == 0 || P == 0 || K == 0 || D == 0) return;
  const int64_t first_tile = pair_offset / tile_pairs;
  auto z = at::empty({tile_pairs, D}, h.options());
  auto d = at::empty({tile_pairs, K}, h.options());
  auto r = at::empty({D, K}, h.options());
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j0 = 0; j0 < P; j0 += tile_pairs) {
      const int64_t np = std::min(tile_pairs, P - j0);
      const int64_t group = (first_tile + j0 / tile_pairs) % M;
      if (z_in.has_value()) {
        z.narrow(0, 0, np).copy_((*z_in)[b].narrow(0, j0, np));
      } else {
        AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "stein_accumulate_cuda", [&] {
          launch_stein_directions<scalar_t>(z.data_ptr<scalar_t>(), uint64_t(seed),
                                            point_offset + b, pair_offset + j0, np, D,
                                            c10::cuda::getCurrentCUDAStream());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      const auto plus = h[b][0].narrow(0, j0, np);
      auto dn = d.narrow(0, 0, np);
      if (A == 2) {
        const auto minus = h[b][1].narrow(0, j0, np);
        at::sub_out(dn, plus, minus);
        grad_acc[b][group].add_(plus.to(at::kDouble).sum(0) + minus.to(at::kDouble).sum(0));
      } else {
        dn.copy_(plus);
        grad_acc[b][group].add_(plus.to(at::kDouble).sum(0));
      }
      at::mm_out(r, z.narrow(0, 0, np).t(), dn);
      hess_acc[b][group].add_(r);
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("stein_perturb", &stein_perturb_cuda);
  m.impl("stein_accumulate", &stein_accumulate_cuda);
}

}  // namespace hessext
