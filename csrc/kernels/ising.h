// 2-D Ising Monte Carlo (H = -sum_<ij> s_i s_j, J = 1, periodic L x L lattice), bodies shared
// by the CPU and CUDA kernels of hessext::ising_sweeps and repeated by the pure-torch reference
// (hessext/ops/_reference.py), which gets the same bits.
//
// Layout: one chain is L*L int8 spins, site k = i*L + j (row i, column j); neighbours wrap.
//
// Random numbers: Philox4x32-10 (kernels/philox.h) keyed by the 64-bit seed, counter
//   Metropolis  (k / 4, sweep, chain, 0)            word k % 4 is site k's uniform
//   Wolff bond  (k, sweep, chain, 1 + cluster)      word 0: bond k-right, word 1: bond k-down
//   Wolff seed  (0xFFFFFFFF, sweep, chain, 1 + cluster)
// so every decision is a pure function of (seed, chain, sweep, cluster, site): independent of
// the thread count, the batch split and the device. Probabilities are compared as integers:
// accept iff word < threshold = floor(p 2^32), the thresholds computed once by the caller.
//
// Metropolis sweep: the sites in a fixed sequence of independent sets (no two neighbours in
// one set), each set updated at once. Even L: the two checkerboard colours c = (i + j) % 2.
// Odd L: the colours touch across the wrap (row L-1 and row 0 have the same colour pattern), so
// each colour is split by r = [i == L-1] + [j == L-1] into three sets, each independent; the
// order is (c, r) = (0,0), (0,1), (0,2), (1,0), (1,1), (1,2). A site flips iff
// x = s * (sum of its four neighbours) <= 0, or x == 2 and word < t4 (p = exp(-4 beta)), or
// x == 4 and word < t8 (p = exp(-8 beta)).
//
// Wolff sweep: a fixed number of cluster flips (a number that depended on the cluster sizes,
// such as "until L*L spins flipped", would make the sampling time depend on the state and bias
// the samples: measured, hundreds of standard errors at L = 4). Cluster m grows from the seed
// site over the bonds to aligned neighbours whose word is below tw (p = 1 - exp(-2 beta)); with
// fixed bond variables the cluster is the connected component of the seed, whatever order it
// is grown in.
#pragma once
#include <cstdint>

#include "common.h"
#include "kernels/philox.h"

namespace hessext {
namespace ising {

constexpr uint32_t kSeedCounter = 0xFFFFFFFFu;

// The four Philox words of counter (c0, sweep, chain, stream) under seed.
HESSEXT_HD void words4(uint64_t seed, uint32_t c0, uint32_t sweep, uint32_t chain,
                       uint32_t stream, uint32_t w[4]) {
  w[0] = c0;
  w[1] = sweep;
  w[2] = chain;
  w[3] = stream;
  philox::philox4x32_10(w, uint32_t(seed), uint32_t(seed >> 32));
}

// The Metropolis uniform of site k in (chain, sweep).
HESSEXT_HD uint32_t metropolis_word(uint64_t seed, uint32_t chain, uint32_t sweep, int64_t k) {
  uint32_t w[4];
  words4(seed, uint32_t(k >> 2), sweep, chain, 0u, w);
  return w[k & 3];
}

// Which independent set (0..5, in sweep order) site (i, j) belongs to.
HESSEXT_HD int phase_of(int64_t i, int64_t j, int64_t L) {
  const int colour = int((i + j) & 1);
  const int rank = (L & 1) ? int(i == L - 1) + int(j == L - 1) : 0;
  return 3 * colour + rank;
}

// Number of sets a sweep runs through: 2 checkerboard colours for even L, 6 sets for odd L.
HESSEXT_HD int n_phases(int64_t L) { return (L & 1) ? 6 : 2; }

// Metropolis: the new value of spin s whose four neighbours sum to h, given its uniform.
HESSEXT_HD int8_t metropolis_spin(int8_t s, int h, uint32_t word, uint32_t t4, uint32_t t8) {
  const int x = int(s) * h;
  const uint32_t threshold = x == 2 ? t4 : t8;
  const bool flip = (x <= 0) | (word < threshold);
  return flip ? int8_t(-s) : s;
}

// Metropolis update of site (i, j) of one chain, in place.
HESSEXT_HD void metropolis_site(int8_t* s, int64_t L, int64_t i, int64_t j, uint32_t word,
                                uint32_t t4, uint32_t t8) {
  const int64_t up = (i == 0 ? L - 1 : i - 1) * L, down = (i == L - 1 ? 0 : i + 1) * L;
  const int64_t left = j == 0 ? L - 1 : j - 1, right = j == L - 1 ? 0 : j + 1;
  const int h = s[up + j] + s[down + j] + s[i * L + left] + s[i * L + right];
  s[i * L + j] = metropolis_spin(s[i * L + j], h, word, t4, t8);
}

// Wolff: the seed site of cluster `cluster` in (chain, sweep), uniform over N sites (63 random
// bits reduced mod N: the bias is below N 2^-63).
HESSEXT_HD int64_t wolff_seed_site(uint64_t seed, uint32_t chain, uint32_t sweep,
                                   uint32_t cluster, int64_t N) {
  uint32_t w[4];
  words4(seed, kSeedCounter, sweep, chain, 1u + cluster, w);
  const uint64_t bits = (uint64_t(w[0] >> 1) << 32) | uint64_t(w[1]);
  return int64_t(bits % uint64_t(N));
}

// Wolff: whether the bond from site `owner` to its right (dir 0) or lower (dir 1) neighbour is
// open in cluster `cluster` (when both ends are aligned).
HESSEXT_HD bool wolff_bond_open(uint64_t seed, uint32_t chain, uint32_t sweep, uint32_t cluster,
                                int64_t owner, int dir, uint32_t tw) {
  uint32_t w[4];
  words4(seed, uint32_t(owner), sweep, chain, 1u + cluster, w);
  return w[dir] < tw;
}

// Observables of one chain: signed magnetisation m = (1/N) sum s and energy e = -(1/N) sum_i
// s_i (s_right + s_down), from exact integer sums (so every path gives the same doubles).
HESSEXT_HD void chain_observables(const int8_t* s, int64_t L, double* m, double* e) {
  int64_t sum = 0, bonds = 0;
  for (int64_t i = 0; i < L; ++i) {
    const int8_t* row = s + i * L;
    const int8_t* down = s + (i == L - 1 ? 0 : i + 1) * L;
    for (int64_t j = 0; j < L; ++j) {
      sum += row[j];
      bonds += row[j] * (row[j == L - 1 ? 0 : j + 1] + down[j]);
    }
  }
  const double N = double(L * L);
  *m = double(sum) / N;
  *e = -double(bonds) / N;
}

#if !defined(__CUDACC__)
// Host: the Metropolis uniforms of all sites of one chain in one sweep, w[0 .. 4 ceil(N/4)).
// Stage loops over blocks of quads so that g++ vectorises Philox (as philox::normals_row);
// the bits are those of metropolis_word.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
inline void metropolis_words(uint64_t seed, uint32_t chain, uint32_t sweep, int64_t N,
                             uint32_t* w) {
  constexpr int kBlock = 16;
  const int64_t Q = (N + 3) / 4;
  const uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int64_t q0 = 0; q0 < Q; q0 += kBlock) {
    alignas(64) uint32_t w0[kBlock], w1[kBlock], w2[kBlock], w3[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      uint32_t c[4] = {uint32_t(q0 + i), sweep, chain, 0u};
      philox::philox4x32_10(c, k0, k1);
      w0[i] = c[0];
      w1[i] = c[1];
      w2[i] = c[2];
      w3[i] = c[3];
    }
    const int64_t n = (Q - q0) < kBlock ? (Q - q0) : kBlock;
    for (int64_t i = 0; i < n; ++i) {
      w[4 * (q0 + i) + 0] = w0[i];
      w[4 * (q0 + i) + 1] = w1[i];
      w[4 * (q0 + i) + 2] = w2[i];
      w[4 * (q0 + i) + 3] = w3[i];
    }
  }
}
#endif

}  // namespace ising
}  // namespace hessext
