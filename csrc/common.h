// Shared by every hessext source: the host/device qualifier used by the kernel bodies in
// kernels/*.h, and small argument checks for the C++ op implementations.
//
// Shape letters, used the same way in every header: N samples, P parameters, C classes,
// D input dimensions, S Monte-Carlo samples, B block size, T sequence/spatial positions,
// I input features, O output features.
#pragma once

#if defined(__CUDACC__)
#define HESSEXT_HD __host__ __device__ __forceinline__
#else
// Under g++ the same bodies are plain inline functions, so the CPU tests exercise exactly the
// arithmetic the GPU runs.
#define HESSEXT_HD inline
#endif

// A loop the CPU compiler must vectorise (OpenMP simd; the kernels are built with OpenMP);
// nothing under nvcc, where the loop is one thread's.
#if defined(__CUDACC__)
#define HESSEXT_SIMD
#else
#define HESSEXT_SIMD _Pragma("omp simd")
#endif

#include <cstdint>

namespace hessext {

// Accumulator type: float32 inputs accumulate in float32 inside one sample (as torch's own
// per-sample paths do), float64 in float64.
template <typename scalar_t>
struct acc_type {
  using type = scalar_t;
};

}  // namespace hessext
