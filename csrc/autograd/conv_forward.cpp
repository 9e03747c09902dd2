// Autograd of hessext::conv_forward, for every device: the backward is torch's own
// convolution_backward, asked only for the gradients this backward pass needs. That is why it
// is registered here in C++ and not with torch.library.register_autograd: a C++ autograd
// Function knows which inputs the running backward pass needs (needs_input_grad asks the
// graph task), a Python one only which inputs require grad. In the per-sample capture the
// weights require grad but their batch gradient is never asked for; computing it anyway would
// cost as much as the convolution itself.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace hessext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor conv_forward_redispatch(const at::Tensor& x, const at::Tensor& weight,
                                   const c10::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hessext::conv_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const c10::optional<at::Tensor>&, at::IntArrayRef,
                                         at::IntArrayRef, at::IntArrayRef, int64_t)>();
  return op.call(x, weight, bias, stride, padding, dilation, groups);
}

class ConvForward : public torch::autograd::Function<ConvForward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["bias_size"] = bias.has_value() ? bias->size(0) : int64_t(-1);
    return conv_forward_redispatch(x, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t bias_size = ctx->saved_data["bias_size"].toInt();
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   bias_size >= 0 && ctx->needs_input_grad(2)};
    at::Tensor gx, gw, gb;
    if (mask[0] || mask[1] || mask[2]) {
      const std::vector<int64_t> bias_sizes{bias_size};
      std::tie(gx, gw, gb) = at::convolution_backward(
          grads[0], saved[0], saved[1],
          bias_size >= 0 ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(),
          ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
          ctx->saved_data["dilation"].toIntVector(), /*transposed=*/false, {0, 0},
          ctx->saved_data["groups"].toInt(), mask);
    }
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor conv_forward_autograd(const at::Tensor& x, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups) {
  return ConvForward::apply(x, weight, bias, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, Autograd, m) {
  m.impl("conv_forward", &conv_forward_autograd);
}

}  // namespace hessext
