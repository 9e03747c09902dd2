// CPU implementations of hessext::stein_perturb and hessext::stein_accumulate (schemas in
// registration.cpp, shapes and formulas in kernels/stein.h).
//
// Determinism: the result depends on (seed, indices) only, never on the thread count or on
// how the caller chunks the samples. Each tile of tile_pairs pairs (tiles numbered globally)
// is one GEMM of a fixed shape at the model's precision, always run single-threaded on
// 64-byte-aligned private buffers, and the tiles are added into the float64 accumulators in
// tile order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "kernels/stein.h"

namespace hessext {
namespace {

at::Tensor stein_perturb_cpu(const at::Tensor& x_in, double sigma, int64_t seed,
                             int64_t point_offset, int64_t pair_offset, int64_t n_pairs,
                             bool antithetic) {
  check_stein_perturb_args(x_in, sigma, seed, point_offset, pair_offset, n_pairs);
  const auto x = x_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), A = antithetic ? 2 : 1;
  auto out = at::empty({B, A, n_pairs, D}, x.options());
  if (B == 0 || D == 0 || n_pairs == 0) return out;
  const int64_t Q = (D + 3) / 4;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stein_perturb_cpu", [&] {
    const scalar_t s = scalar_t(std::sqrt(sigma));
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    // one task per (point, pair): a row of D coordinates for each sign
    at::parallel_for(0, B * n_pairs, std::max<int64_t>(1, 8192 / D), [&](int64_t lo, int64_t hi) {
      std::vector<float> z(4 * Q);
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t b = row / n_pairs, j = row % n_pairs;
        scalar_t* plus = out_ptr + ((b * A) * n_pairs + j) * D;
        scalar_t* minus = antithetic ? plus + n_pairs * D : nullptr;
        philox::normals_row(uint64_t(seed), uint64_t(point_offset + b),
                            uint64_t(pair_offset + j), D, z.data());
        const scalar_t* x_row = x_ptr + b * D;
        for (int64_t d = 0; d < D; ++d) {
          const scalar_t step = s * scalar_t(z[d]);
          plus[d] = x_row[d] + step;
          if (minus != nullptr) minus[d] = x_row[d] - step;
        }
      }
    });
  });
  return out;
}

void stein_accumulate_cpu(const at::Tensor& h_in, at::Tensor hess_acc, at::Tensor grad_acc,
                          int64_t seed, int64_t point_offset, int64_t pair_offset,
                          int64_t tile_pairs, const c10::optional<at::Tensor>& z_in) {
  check_stein_accumulate_args(h_in, hess_acc, grad_acc, point_offset, pair_offset, tile_pairs);
  if (z_in.has_value()) check_stein_directions_arg(h_in, hess_acc, *z_in);
  const auto h = h_in.contiguous();
  const auto z_given = z_in.has_value() ? z_in->contiguous() : at::Tensor();
  const int64_t B = h.size(0), A = h.size(1), P = h.size(2), K = h.size(3);
  const int64_t M = hess_acc.size(1), D = hess_acc.size(2);
  if (B == 0 || P == 0 || K == 0 || D == 0) return;
  const int64_t Q = (D + 3) / 4;
  const int64_t n_tiles = (P + tile_pairs - 1) / tile_pairs;
  const int64_t first_tile = pair_offset / tile_pairs;
  const int64_t n_tasks = B * n_tiles;  // task = (point, tile), point-major
  // One task per thread and wave. Waves are padded to the thread count so that every GEMM
  // runs inside a parallel region, where the BLAS is single-threaded: a GEMM that sometimes
  // ran on several threads could round differently.
  const int64_t wave = std::max<int64_t>(1, at::get_num_threads());

  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "stein_accumulate_cpu", [&] {
    const auto opts = h.options();
    std::vector<at::Tensor> z_buf, d_buf, r_buf;
    for (int64_t w = 0; w < wave; ++w) {
      z_buf.push_back(at::empty({tile_pairs, D}, opts));
      d_buf.push_back(at::empty({tile_pairs, K}, opts));
      r_buf.push_back(at::empty({D, K}, opts));
    }
    auto g_buf = at::zeros({wave, K}, opts.dtype(at::kDouble));
    const scalar_t* h_ptr = h.data_ptr<scalar_t>();
    const scalar_t* z_given_ptr = z_given.defined() ? z_given.data_ptr<scalar_t>() : nullptr;
    double* hess_ptr = hess_acc.data_ptr<double>();
    double* grad_ptr = grad_acc.data_ptr<double>();
    double* g_ptr = g_buf.data_ptr<double>();

    for (int64_t w0 = 0; w0 < n_tasks; w0 += wave) {
      const int64_t n_wave = std::min(wave, n_tasks - w0);
      // Phase 1: per task, regenerate the tile's directions, form h+ - h- and the tile
      // product z^T (h+ - h-) at the model's precision.
      at::parallel_for(0, z_buf.size(), 1, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          if (i >= n_wave) continue;  // padding of the last wave
          const int64_t task = w0 + i, b = task / n_tiles, t = task % n_tiles;
          const int64_t j0 = t * tile_pairs, np = std::min(tile_pairs, P - j0);
          scalar_t* z = z_buf[i].data_ptr<scalar_t>();
          std::vector<float> z_row(z_given_ptr == nullptr ? 4 * Q : 0);
          // given directions are copied into the aligned tile buffer all the same: the GEMM
          // then sees the same operands, so both ways give the same bits
          if (z_given_ptr != nullptr) {
            std::copy(z_given_ptr + (b * P + j0) * D, z_given_ptr + (b * P + j0 + np) * D, z);
          }
          for (int64_t j = 0; j < np && z_given_ptr == nullptr; ++j) {
            philox::normals_row(uint64_t(seed), uint64_t(point_offset + b),
                                uint64_t(pair_offset + j0 + j), D, z_row.data());
            for (int64_t d = 0; d < D; ++d) z[j * D + d] = scalar_t(z_row[d]);
          }
          const scalar_t* hp = h_ptr + ((b * A) * P + j0) * K;
          const scalar_t* hm = hp + P * K;
          scalar_t* d = d_buf[i].data_ptr<scalar_t>();
          double* g = g_ptr + i * K;
          for (int64_t k = 0; k < K; ++k) g[k] = 0.0;
          for (int64_t j = 0; j < np; ++j) {
            for (int64_t k = 0; k < K; ++k) {
              const scalar_t plus = hp[j * K + k];
              if (A == 2) {
                const scalar_t minus = hm[j * K + k];
                d[j * K + k] = plus - minus;
                g[k] += double(plus) + double(minus);
              } else {
                d[j * K + k] = plus;
                g[k] += double(plus);
              }
            }
          }
          at::mm_out(r_buf[i], z_buf[i].narrow(0, 0, np).t(), d_buf[i].narrow(0, 0, np));
        }
      });
      // Phase 2: add the wave's tiles to their groups in tile order, elements in parallel.
      at::parallel_for(0, D * K, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = 0; i < n_wave; ++i) {
          const int64_t task = w0 + i, b = task / n_tiles, t = task % n_tiles;
          const int64_t group = (first_tile + t) % M;
          double* acc = hess_ptr + (b * M + group) * D * K;
          const scalar_t* r = r_buf[i].data_ptr<scalar_t>();
          for (int64_t e = lo; e < hi; ++e) acc[e] += double(r[e]);
        }
      });
      for (int64_t i = 0; i < n_wave; ++i) {
        const int64_t task = w0 + i, b = task / n_tiles, t = task % n_tiles;
        const int64_t group = (first_tile + t) % M;
        double* acc = grad_ptr + (b * M + group) * K;
        for (int64_t k = 0; k < K; ++k) acc[k] += g_ptr[i * K + k];
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("stein_perturb", &stein_perturb_cpu);
  m.impl("stein_accumulate", &stein_accumulate_cpu);
}

}  // namespace hessext
