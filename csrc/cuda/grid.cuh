// Launch shape shared by the element-wise CUDA kernels (one thread per output element, a
// grid-stride loop): blocks of kThreads, at most 65535 blocks. No torch header, like every .cu.
#pragma once
#include <cstdint>

namespace hessext {

constexpr int kThreads = 256;

inline int grid_for(int64_t total) {
  const int64_t want = (total + kThreads - 1) / kThreads;
  return int(want < 65535 ? want : 65535);
}

}  // namespace hessext

// for (k = this thread's first element; k < total; k += all threads of the grid)
#define HESSEXT_GRID_STRIDE(k, total)                                          \
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < (total); \
       k += int64_t(gridDim.x) * blockDim.x)
