// CPU implementation of hessext::conv_weight_grad (schema in registration.cpp, shapes in
// kernels/conv_weight_grad.h).
//
// Samples in chunks, one chunk per task: the chunk's patches for one group are unfolded into a
// per-thread buffer [B, Cg*kH*kW, Ho*Wo] and d_n,g cols_n^T is written straight into the
// output blocks by ONE batched GEMM per chunk. The batch is never unfolded as a whole: the
// extra memory is a chunk's patches (~1 MB) per thread.
// Measured on the benchmark layers (2 vCPU): a GEMM call per sample spent more in dispatch and
// tensor slicing (~10 us a call) than in arithmetic on these small products (2.7 / 4.7 ms for
// the 28x28 CNN's two layers, 8.3 / 5.4 / 1.2 ms for the toolbox CNN's three, against a few
// hundred microseconds of flops each); one call per chunk amortises that. (The direct
// correlation of kernels/conv_weight_grad.h, one output element per iteration, which the CUDA
// kernel runs, was slower still on CPU: 65 / 404 ms and 136 / 110 / 20 ms.)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "kernels/conv_weight_grad.h"

namespace hessext {
namespace {

// samples per chunk: the patch buffer of a chunk stays within ~1 MB of float32. Measured on the
// benchmark layers (2 threads; 28x28 CNN's two, toolbox CNN's three): 256 KB 8.1 ms, 512 KB 7.7,
// 1 MB 7.3, 2 MB 9.3, 4 MB 10.5: fewer, larger GEMMs until the patches leave the cache.
constexpr int64_t kChunkElements = int64_t(1) << 18;

void conv_weight_grad_cpu(const at::Tensor& x_in, const at::Tensor& d_in, at::Tensor out,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  check_conv_weight_grad_args(x_in, d_in, out, stride, padding, dilation, groups);
  const auto x = x_in.contiguous();
  const auto d = d_in.contiguous();
  ConvGeometry g{x.size(1), x.size(2), x.size(3), d.size(1), d.size(2), d.size(3),
                 x.size(1) / groups, d.size(1) / groups, out.size(3), out.size(4),
                 stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
  const int64_t N = x.size(0);
  const int64_t K = g.Cg * g.kH * g.kW, L = g.Ho * g.Wo;
  if (N == 0 || g.O == 0 || K == 0) return;
  if (L == 0) {
    out.zero_();
    return;
  }
  // Stride 1 without padding: output position (oh, ow) reads x[.., oh + kh dh, ow + kw dw], so
  // over positions l = oh W + ow of a plane W wide each patch row is ONE contiguous run of the
  // input, Lp = (Ho - 1) W + Wo long: one copy instead of Ho copies of Wo. The W - Wo positions
  // per row that lie past Wo get a zero output gradient (a padded copy of d), so they add
  // nothing (except 0 * inf = NaN where the input is infinite, where the unfolded product
  // already has such terms). The padded copy of d costs Og*Ho copies of Wo per sample against
  // the K*(Ho - 1) copies saved, so runs serve layers with more patch rows than output channels:
  // 28x28 CNN's second layer (K = 144, Og = 32) 2.8 -> 2.1 ms; its first (K = 9, Og = 16)
  // would go 0.9 -> 1.8 ms.
  const bool runs = g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.Ho > 1 &&
                    g.Wo < g.W && g.Og < K;
  const int64_t Lp = runs ? (g.Ho - 1) * g.W + g.Wo : L;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, kChunkElements / (K * Lp)));
  const int64_t n_chunks = (N + chunk - 1) / chunk;
  // [N, O, K] and [N, O, L] views: the per-sample blocks of out are contiguous (checked), so
  // the chunk's output is a strided batch the GEMM writes in place
  const auto out3 = out.view({N, g.O, K});
  const auto d3 = d.view({N, g.O, L});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_weight_grad_cpu", [&] {
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    const scalar_t* d_ptr = d.data_ptr<scalar_t>();
    at::parallel_for(0, n_chunks, 1, [&](int64_t begin, int64_t end) {
      auto cols = at::empty({chunk, K, Lp}, x.options());
      scalar_t* cols_ptr = cols.data_ptr<scalar_t>();
      // the chunk's output gradients on the W-wide positions (zeros past Wo), for runs
      auto d_runs = runs ? at::zeros({chunk, g.Og, Lp}, x.options()) : at::Tensor();
      for (int64_t c = begin; c < end; ++c) {
        const int64_t n0 = c * chunk, nb = std::min(chunk, N - n0);
        for (int64_t grp = 0; grp < groups; ++grp) {
          at::Tensor d_blk;
          if (runs) {
            scalar_t* dr = d_runs.data_ptr<scalar_t>();
            for (int64_t i = 0; i < nb; ++i) {
              conv_patch_runs_sample(x_ptr + (n0 + i) * g.C * g.H * g.W, g, grp, Lp,
                                     cols_ptr + i * K * Lp);
              conv_grad_on_runs_sample(d_ptr + ((n0 + i) * g.O + grp * g.Og) * L, g, Lp,
                                       dr + i * g.Og * Lp);
            }
            d_blk = d_runs.narrow(0, 0, nb);
          } else {
            for (int64_t i = 0; i < nb; ++i) {
              conv_im2col_sample(x_ptr + (n0 + i) * g.C * g.H * g.W, g, grp,
                                 cols_ptr + i * K * L);
            }
            d_blk = d3.narrow(0, n0, nb).narrow(1, grp * g.Og, g.Og);
          }
          auto out_blk = out3.narrow(0, n0, nb).narrow(1, grp * g.Og, g.Og);
          at::bmm_out(out_blk, d_blk, cols.narrow(0, 0, nb).transpose(1, 2));
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("conv_weight_grad", &conv_weight_grad_cpu);
}

}  // namespace hessext
