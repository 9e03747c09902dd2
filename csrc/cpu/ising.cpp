// CPU implementation of hessext::ising_sweeps (schema in registration.cpp, the update rules and
// the random-number counters in kernels/ising.h). One task per chain (at::parallel_for over the
// batch): every decision is a pure function of (seed, chain, sweep, site), so the result is the
// same for any thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "checks.h"
#include "kernels/ising.h"

namespace hessext {
namespace {

// The Metropolis update of set (colour c, rank 0) on row i, columns [0, n_cols): the interior
// in a vectorised loop writing a scratch row (the colour-c sites read only the other colour,
// which this set leaves alone), the two wrapping columns one by one.
void metropolis_row(int8_t* s, int64_t L, int64_t i, int c, int64_t n_cols, const uint32_t* w,
                    uint32_t t4, uint32_t t8, int8_t* scratch) {
  const int8_t* up = s + (i == 0 ? L - 1 : i - 1) * L;
  const int8_t* down = s + (i == L - 1 ? 0 : i + 1) * L;
  int8_t* row = s + i * L;
  const uint32_t* wr = w + i * L;
  const int64_t hi = n_cols < L - 1 ? n_cols : L - 1;  // interior columns [1, hi)
  HESSEXT_SIMD
  for (int64_t j = 1; j < hi; ++j) {
    const int8_t v = row[j];
    const int h = up[j] + down[j] + row[j - 1] + row[j + 1];
    const int8_t flipped = ising::metropolis_spin(v, h, wr[j], t4, t8);
    scratch[j] = int((i + j) & 1) == c ? flipped : v;
  }
  if (hi > 1) std::memcpy(row + 1, scratch + 1, size_t(hi - 1));
  if (int(i & 1) == c) ising::metropolis_site(s, L, i, 0, wr[0], t4, t8);
  if (n_cols == L && int((i + L - 1) & 1) == c) ising::metropolis_site(s, L, i, L - 1, wr[L - 1], t4, t8);
}

void metropolis_sweep(int8_t* s, int64_t L, const uint32_t* w, uint32_t t4, uint32_t t8,
                      int8_t* scratch) {
  const bool odd = (L & 1) != 0;
  const int64_t inner = odd ? L - 1 : L;  // rows and columns of the rank-0 sets
  for (int c = 0; c < 2; ++c) {
    for (int64_t i = 0; i < inner; ++i) metropolis_row(s, L, i, c, inner, w, t4, t8, scratch);
    if (!odd) continue;
    // rank 1: column L-1 above row L-1, and row L-1 left of column L-1
    for (int64_t i = 0; i < L - 1; ++i)
      if (int((i + L - 1) & 1) == c) ising::metropolis_site(s, L, i, L - 1, w[i * L + L - 1], t4, t8);
    for (int64_t j = 0; j < L - 1; ++j)
      if (int((L - 1 + j) & 1) == c)
        ising::metropolis_site(s, L, L - 1, j, w[(L - 1) * L + j], t4, t8);
    // rank 2: the corner, colour (2L - 2) % 2 = 0
    if (c == 0) ising::metropolis_site(s, L, L - 1, L - 1, w[L * L - 1], t4, t8);
  }
}

// One Wolff sweep of one chain: `clusters` cluster flips. Spins are flipped as they join, so
// "aligned and not yet in the cluster" is "still has the seed's old value".
void wolff_sweep(int8_t* s, int64_t L, uint64_t seed, uint32_t chain, uint32_t sweep,
                 uint32_t tw, int64_t clusters, std::vector<int32_t>& stack) {
  const int64_t N = L * L;
  for (int64_t m = 0; m < clusters; ++m) {
    const int64_t x0 = ising::wolff_seed_site(seed, chain, sweep, uint32_t(m), N);
    const int8_t old = s[x0];
    s[x0] = int8_t(-old);
    int64_t top = 0;
    stack[top++] = int32_t(x0);
    while (top > 0) {
      const int64_t x = stack[--top];
      const int64_t i = x / L, j = x % L;
      const int64_t right = i * L + (j == L - 1 ? 0 : j + 1);
      const int64_t left = i * L + (j == 0 ? L - 1 : j - 1);
      const int64_t down = (i == L - 1 ? 0 : i + 1) * L + j;
      const int64_t up = (i == 0 ? L - 1 : i - 1) * L + j;
      // (neighbour, owner of the bond, direction of the bond from its owner)
      const int64_t nb[4][3] = {{right, x, 0}, {left, left, 0}, {down, x, 1}, {up, up, 1}};
      for (const auto& n : nb) {
        if (s[n[0]] == old &&
            ising::wolff_bond_open(seed, chain, sweep, uint32_t(m), n[1], int(n[2]), tw)) {
          s[n[0]] = int8_t(-old);
          stack[top++] = int32_t(n[0]);
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> ising_sweeps_cpu(const at::Tensor& spins_in,
                                                    const at::Tensor& thresholds_in,
                                                    int64_t n_sweeps, int64_t seed,
                                                    int64_t sweep_offset, bool wolff,
                                                    int64_t clusters_per_sweep, bool record) {
  check_ising_sweeps_args(spins_in, thresholds_in, n_sweeps, sweep_offset, clusters_per_sweep);
  auto spins = spins_in.contiguous().clone();
  const auto thresholds = thresholds_in.contiguous();
  const int64_t B = spins.size(0), L = spins.size(1), N = L * L;
  auto series = at::empty({B, record ? n_sweeps : 0, 2}, spins.options().dtype(at::kDouble));
  if (B == 0 || n_sweeps == 0) return {spins, series};
  int8_t* s_ptr = spins.data_ptr<int8_t>();
  double* series_ptr = series.data_ptr<double>();
  const int64_t* thr = thresholds.data_ptr<int64_t>();
  const uint64_t key = uint64_t(seed);
  // Chains are independent, so any split gives the same bits; tasks of at least ~2^16 spin
  // updates, so that small calls do not pay for waking threads.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, N * n_sweeps * (wolff ? clusters_per_sweep : 1)));
  at::parallel_for(0, B, grain, [&](int64_t lo, int64_t hi) {
    std::vector<uint32_t> w(wolff ? 0 : size_t(4 * ((N + 3) / 4)));
    std::vector<int8_t> scratch(static_cast<size_t>(L));
    std::vector<int32_t> stack(wolff ? size_t(N) : 0);
    for (int64_t b = lo; b < hi; ++b) {
      int8_t* s = s_ptr + b * N;
      const uint32_t t4 = uint32_t(thr[3 * b]), t8 = uint32_t(thr[3 * b + 1]);
      const uint32_t tw = uint32_t(thr[3 * b + 2]);
      for (int64_t t = 0; t < n_sweeps; ++t) {
        const uint32_t sweep = uint32_t(sweep_offset + t);
        if (wolff) {
          wolff_sweep(s, L, key, uint32_t(b), sweep, tw, clusters_per_sweep, stack);
        } else {
          ising::metropolis_words(key, uint32_t(b), sweep, N, w.data());
          metropolis_sweep(s, L, w.data(), t4, t8, scratch.data());
        }
        if (record) {
          double* out = series_ptr + (b * n_sweeps + t) * 2;
          ising::chain_observables(s, L, out, out + 1);
        }
      }
    }
  });
  return {spins, series};
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("ising_sweeps", &ising_sweeps_cpu);
}

}  // namespace hessext
