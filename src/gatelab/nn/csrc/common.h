// common.h: includes, the target_clones / inline macros and the tensor aliases of the
// fused LSTM extension (included by fused_lstm.cpp only).
#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdint>
#include <functional>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GL_CLONES
#endif
#define GL_INLINE static inline __attribute__((always_inline))
// Full unrolling of the register tiles' loops over rows and vectors: without it GCC 12
// kept the 8-vector tiles (one or two rows, AVX2) as loops over arrays on the stack, each
// 32-byte vector stored as two 16-byte halves and read back whole (a store-forwarding
// stall per load): 4x slower at B = 1 and 2 on a Zen 3 (issue 16, branch gemmsel).
#define GL_UNROLL _Pragma("GCC unroll 16")

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;


}  // namespace
