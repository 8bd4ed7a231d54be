// blas.h: BLAS entry points (MKL inside libtorch) resolved at run time
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "common.h"

namespace {

// ----------------------------------------------------------------------- BLAS, resolved
// at run time from the library that holds ATen (MKL inside libtorch_cpu for the x86 wheels).
// If a symbol is missing the code falls back to at::mm_out, so the extension never fails
// to load for want of MKL.

using gemm_f77_s = void (*)(const char*, const char*, const int*, const int*, const int*,
                            const float*, const float*, const int*, const float*, const int*,
                            const float*, float*, const int*);
using gemm_f77_d = void (*)(const char*, const char*, const int*, const int*, const int*,
                            const double*, const double*, const int*, const double*,
                            const int*, const double*, double*, const int*);
using pack_size_f = size_t (*)(int, int, int, int);
using pack_f = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
using compute_f = void (*)(int, int, int, int, int, int, const float*, int, const float*, int,
                           float, float*, int);

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

struct Blas {
  gemm_f77_s sgemm = nullptr;
  gemm_f77_d dgemm = nullptr;
  pack_size_f pack_size = nullptr;
  pack_f pack = nullptr;
  compute_f compute = nullptr;

  static const Blas& get() {
    static const Blas blas = [] {
      Blas b;
      Dl_info info;
      void* handle = nullptr;
      if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) && info.dli_fname)
        handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
      if (!handle) return b;
      b.sgemm = reinterpret_cast<gemm_f77_s>(dlsym(handle, "sgemm_"));
      b.dgemm = reinterpret_cast<gemm_f77_d>(dlsym(handle, "dgemm_"));
      b.pack_size = reinterpret_cast<pack_size_f>(dlsym(handle, "cblas_sgemm_pack_get_size"));
      b.pack = reinterpret_cast<pack_f>(dlsym(handle, "cblas_sgemm_pack"));
      b.compute = reinterpret_cast<compute_f>(dlsym(handle, "cblas_sgemm_compute"));
      if (!(b.pack_size && b.pack && b.compute)) b.pack_size = nullptr;
      return b;
    }();
    return blas;
  }
};

}  // namespace
