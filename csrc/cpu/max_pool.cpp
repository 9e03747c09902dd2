// CPU implementation of hessext::max_pool_forward / max_pool_backward (shapes and semantics in
// kernels/max_pool.h): planes [n, c] in parallel, each read and written once, in order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "checks.h"
#include "kernels/max_pool.h"

namespace hessext {
namespace {

#if defined(__SSE2__)
// float32 windows of width 2 or 4 (MaxPool2d(2), MaxPool1d(4), ...), four windows at a time in
// SSE registers: the same updates in the same order as max_pool_row, lane by lane, so the same
// bits. The generic row keeps a window's running maximum in memory and loops over each window
// element in its own pass, with a scalar remainder per pass; on 13 or 5 windows per row that
// loop control, not the comparisons, was most of its 3.3 ms on the 28x28 CNN's first pooling.

// Lanes where v takes over best (v > best, or v is NaN: max_pool_takes) take v and index k.
inline void take_where_greater(__m128 v, int32_t k, __m128& best, __m128i& at) {
  const __m128 take = _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_cmpunord_ps(v, v));
  best = _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, best));
  const __m128i t = _mm_castps_si128(take);
  at = _mm_or_si128(_mm_and_si128(t, _mm_set1_epi32(k)), _mm_andnot_si128(t, at));
}

// Four windows whose top-left elements are top[0], top[kW], top[2 kW], top[3 kW] (rows of the
// window row_stride apart): their maxima into best, their indices into at.
template <int KW>
inline void max_pool_4_windows(const float* top, int64_t row_stride, int64_t kH, __m128& best,
                               __m128i& at) {
  best = _mm_set1_ps(-std::numeric_limits<float>::infinity());
  at = _mm_setzero_si128();
  for (int64_t i = 0; i < kH; ++i) {
    const float* r = top + i * row_stride;
    const int32_t k = int32_t(i * KW);
    if (KW == 2) {  // [a0 b0 a1 b1] [a2 b2 a3 b3] -> [a0 a1 a2 a3], [b0 b1 b2 b3]
      const __m128 v0 = _mm_loadu_ps(r), v1 = _mm_loadu_ps(r + 4);
      take_where_greater(_mm_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)), k, best, at);
      take_where_greater(_mm_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)), k + 1, best, at);
    } else {  // KW == 4: a 4 x 4 transpose gives the windows' j-th elements
      __m128 v0 = _mm_loadu_ps(r), v1 = _mm_loadu_ps(r + 4), v2 = _mm_loadu_ps(r + 8),
             v3 = _mm_loadu_ps(r + 12);
      _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
      take_where_greater(v0, k, best, at);
      take_where_greater(v1, k + 1, best, at);
      take_where_greater(v2, k + 2, best, at);
      take_where_greater(v3, k + 3, best, at);
    }
  }
}

// The four int32 indices (< 256) as four bytes.
inline int32_t pack_indices(__m128i at) {
  return _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(at, at), at));
}

// The first n (<= 4) windows' maxima and indices.
inline void store_windows(__m128 best, __m128i at, int64_t n, float* y, uint8_t* idx) {
  alignas(16) float values[4];
  _mm_store_ps(values, best);
  const int32_t bytes = pack_indices(at);
  uint8_t index[4];
  std::memcpy(index, &bytes, 4);
  for (int64_t w = 0; w < n; ++w) {
    y[w] = values[w];
    idx[w] = index[w];
  }
}

// One output row of windows of width KW (2 or 4). The last Wo % 4 windows are computed as four
// all the same: their extra lanes read the elements after the row (any values: lanes do not
// mix) and are not stored; only where those reads would pass x_end, the end of the input, do
// they run on a copy padded with zeros. (A scalar remainder, or a padded copy in every row,
// cost more than the row's full groups of four on 13-window rows.)
template <int KW>
void max_pool_row_sse(const float* x_plane, int64_t W, int64_t oh, int64_t Wo, int64_t kH,
                      const float* x_end, float* y_row, uint8_t* idx_row, float* tail) {
  const float* top = x_plane + oh * kH * W;
  __m128 best;
  __m128i at;
  int64_t ow = 0;
  for (; ow + 4 <= Wo; ow += 4) {
    max_pool_4_windows<KW>(top + ow * KW, W, kH, best, at);
    _mm_storeu_ps(y_row + ow, best);
    const int32_t bytes = pack_indices(at);
    std::memcpy(idx_row + ow, &bytes, 4);
  }
  if (ow == Wo) return;
  const float* first = top + ow * KW;
  if ((kH - 1) * W + 4 * KW <= x_end - first) {
    max_pool_4_windows<KW>(first, W, kH, best, at);
  } else {
    const int64_t n = (Wo - ow) * KW;  // the tail's elements per window row, < 4 KW
    for (int64_t i = 0; i < kH; ++i) {
      std::memcpy(tail + i * 4 * KW, first + i * W, n * sizeof(float));
      for (int64_t e = n; e < 4 * KW; ++e) tail[i * 4 * KW + e] = 0.0f;
    }
    max_pool_4_windows<KW>(tail, 4 * KW, kH, best, at);
  }
  store_windows(best, at, Wo - ow, y_row + ow, idx_row + ow);
}
#endif

// enough elements per task that the parallel loop's overhead does not show
int64_t planes_per_task(int64_t plane_elements) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, plane_elements));
}

std::tuple<at::Tensor, at::Tensor> max_pool_forward_cpu(const at::Tensor& x_in,
                                                        at::IntArrayRef kernel) {
  check_max_pool_forward_args(x_in, kernel);
  const auto x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kH = kernel[0], kW = kernel[1], Ho = H / kH, Wo = W / kW;
  auto y = at::empty({N, C, Ho, Wo}, x.options());
  auto idx = at::empty({N, C, Ho, Wo}, x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, idx};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_forward_cpu", [&] {
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    scalar_t* y_ptr = y.data_ptr<scalar_t>();
    uint8_t* idx_ptr = idx.data_ptr<uint8_t>();
#if defined(__SSE2__)
    if (std::is_same<scalar_t, float>::value && (kW == 2 || kW == 4)) {
      const float* xf = reinterpret_cast<const float*>(x_ptr);
      const float* x_end = xf + x.numel();
      float* yf = reinterpret_cast<float*>(y_ptr);
      at::parallel_for(0, N * C, planes_per_task(H * W), [&](int64_t begin, int64_t end) {
        std::vector<float> tail(kH * 4 * kW);
        for (int64_t p = begin; p < end; ++p) {
          for (int64_t oh = 0; oh < Ho; ++oh) {
            const int64_t o = (p * Ho + oh) * Wo;
            if (kW == 2) {
              max_pool_row_sse<2>(xf + p * H * W, W, oh, Wo, kH, x_end, yf + o, idx_ptr + o,
                                  tail.data());
            } else {
              max_pool_row_sse<4>(xf + p * H * W, W, oh, Wo, kH, x_end, yf + o, idx_ptr + o,
                                  tail.data());
            }
          }
        }
      });
      return;
    }
#endif
    at::parallel_for(0, N * C, planes_per_task(H * W), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> best(Wo);
      std::vector<int32_t> best_at(Wo);
      for (int64_t p = begin; p < end; ++p) {
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const int64_t o = (p * Ho + oh) * Wo;
          max_pool_row(x_ptr + p * H * W, W, oh, Wo, kH, kW, best.data(), best_at.data(),
                       y_ptr + o, idx_ptr + o);
        }
      }
    });
  });
  return {y, idx};
}

at::Tensor max_pool_backward_cpu(const at::Tensor& dy_in, const at::Tensor& idx_in,
                                 at::IntArrayRef kernel, at::IntArrayRef input_size) {
  check_max_pool_backward_args(dy_in, idx_in, kernel, input_size);
  const auto dy = dy_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t N = dy.size(0), C = dy.size(1), Ho = dy.size(2), Wo = dy.size(3);
  const int64_t H = input_size[0], W = input_size[1], kH = kernel[0], kW = kernel[1];
  auto dx = at::empty({N, C, H, W}, dy.options());
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "max_pool_backward_cpu", [&] {
    const scalar_t* dy_ptr = dy.data_ptr<scalar_t>();
    const uint8_t* idx_ptr = idx.data_ptr<uint8_t>();
    scalar_t* dx_ptr = dx.data_ptr<scalar_t>();
    // the offset of window element k = i*kW + j from the window's corner: a table instead of
    // max_pool_grad_block's division per window (a third of this kernel's time)
    std::vector<int64_t> offset(kH * kW);
    for (int64_t k = 0; k < kH * kW; ++k) offset[k] = (k / kW) * W + k % kW;
    at::parallel_for(0, N * C, planes_per_task(H * W), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        scalar_t* dx_plane = dx_ptr + p * H * W;
        // zeros, then one store per window at its chosen element; rows the floor mode left
        // out (below Ho kH) stay zero
        std::fill(dx_plane, dx_plane + H * W, scalar_t(0));
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const scalar_t* dy_row = dy_ptr + (p * Ho + oh) * Wo;
          const uint8_t* idx_row = idx_ptr + (p * Ho + oh) * Wo;
          scalar_t* corner = dx_plane + oh * kH * W;
          for (int64_t ow = 0; ow < Wo; ++ow) corner[ow * kW + offset[idx_row[ow]]] = dy_row[ow];
        }
      }
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("max_pool_forward", &max_pool_forward_cpu);
  m.impl("max_pool_backward", &max_pool_backward_cpu);
}

}  // namespace hessext
