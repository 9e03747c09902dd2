// The hessext operator library: every schema in one place, and the small pybind11 module whose
// import runs these static registrations. Implementations register per dispatch key in
// cpu/*.cpp and cuda/*.cpp; fake (meta) implementations and autograd formulas are registered in
// Python (hessext/ops/_registration.py).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <pybind11/pybind11.h>

TORCH_LIBRARY(hessext, m) {
  // Per-sample weight gradients of a Linear layer written in place into out (a column block of
  // the N x P gradient matrix). a: [N, T, I], d: [N, T, O], out: [N, O, I].
  m.def("linear_weight_grad(Tensor a, Tensor d, Tensor(a!) out) -> ()");
  // Curvature tile update in place: acc += alpha * a^T b, the product at the precision of a and b
  // (float32/float64), the sum in float64. acc: [R, S] float64 (any strides), a: [K, R], b: [K, S].
  m.def("gemm_accumulate(Tensor(a!) acc, Tensor a, Tensor b, float alpha) -> ()");
}

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "hessext compiled core: build information; the tensor ops live in torch.ops.hessext";
  m.attr("version") = HESSEXT_VERSION;
  m.attr("torch_version") = HESSEXT_TORCH_VERSION;
#ifdef HESSEXT_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = HESSEXT_CUDA_ARCHS;
#ifdef _OPENMP
  m.attr("with_openmp") = true;
#else
  m.attr("with_openmp") = false;
#endif
  m.def("num_threads", []() { return at::get_num_threads(); },
        "threads at::parallel_for uses in the hessext CPU kernels");
}
