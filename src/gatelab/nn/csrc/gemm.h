// gemm.h: the register-tiled GEMM/GEMV over packed weights, WeightGemm, bench_gemm
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "blas.h"

namespace {

// ----------------------------------------------------------------------- small GEMM
// C[m, n0:n1] (+)= A[m, :] . op(W)[:, n0:n1] for row-major A (M, K): the recurrent GEMMs
// have few rows (the batch), where MKL's per-call cost and its AVX2 kernels on AMD lose to
// a register-tiled loop over a weight packed once per sequence. Columns are independent,
// so a thread can compute the gate columns of its own hidden units and go straight on to
// the pointwise pass for them (no barrier between GEMM and pointwise).
//
// Packed layout: op(W) (K, N) in panels of PW = 2 vectors of columns, panel-major
// (Wp[(p * K + k) * PW + c]), so that a tile reads contiguous memory. The N columns are
// `groups` blocks of Hg (the gates); each block is zero-padded to Hgp = a multiple of PW,
// and C uses the padded column layout (row stride Np = groups * Hgp).
// GCC vector extensions (32 bytes): native AVX2/AVX-512 code in the x86-64-v3/v4 clones,
// SSE pairs in the baseline one.

// Vec<T, VB>: a GCC vector of VB bytes. A packed panel is always 64 bytes wide (PW columns),
// one 64-byte vector or two 32-byte ones.
template <typename T, int VB>
struct Vec {
  typedef T type __attribute__((vector_size(VB)));
  static constexpr int n = VB / int(sizeof(T));
};
template <typename T>
constexpr int64_t kPanel = 64 / int64_t(sizeof(T));  // PW: columns per panel

// Rows [0, MB) x NP panels of C with VB-byte vectors. A (m, k) is A[m * sam + k * sak];
// C starts from itself (acc), from `bias` (per column) or from zero.
template <typename T, int VB, int MB, int NP>
GL_INLINE void gemm_tile(int64_t K, int64_t ps, const T* __restrict A, int64_t sam, int64_t sak,
                         const T* __restrict Wp, T* __restrict C, int64_t ldc, bool acc,
                         const T* __restrict bias) {
  using V = typename Vec<T, VB>::type;
  constexpr int L = Vec<T, VB>::n, PW = kPanel<T>, VPP = PW / L, NV = NP * VPP;
  V c[MB][NV];
  GL_UNROLL
  for (int m = 0; m < MB; ++m)
    GL_UNROLL
    for (int v = 0; v < NV; ++v) {
      const int64_t off = (v / VPP) * PW + (v % VPP) * L;  // column of this vector
      if (acc) {
        __builtin_memcpy(&c[m][v], C + m * ldc + off, sizeof(V));
      } else if (bias) {
        __builtin_memcpy(&c[m][v], bias + off, sizeof(V));
      } else {
        c[m][v] = V{};
      }
    }
  for (int64_t k = 0; k < K; ++k) {
    V w[NV];
    GL_UNROLL
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(&w[v], Wp + (v / VPP) * ps + k * PW + (v % VPP) * L, sizeof(V));
    GL_UNROLL
    for (int m = 0; m < MB; ++m) {
      const T a = A[m * sam + k * sak];
      GL_UNROLL
      for (int v = 0; v < NV; ++v) c[m][v] += a * w[v];
    }
  }
  GL_UNROLL
  for (int m = 0; m < MB; ++m)
    GL_UNROLL
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(C + m * ldc + (v / VPP) * PW + (v % VPP) * L, &c[m][v], sizeof(V));
}

// Panels [p0, p1); kc steps of k; ps is the panel stride (panel length K * PW). Tiles of
// NACC independent accumulator vectors where the rows allow: 8 with 32-byte vectors (AVX2:
// 8 of its 16 registers), 16 with 64-byte ones (AVX-512, 32 registers: a 512-bit FMA has
// 4 cycles of latency on two ports, so 8 chains only just keep it busy; on a Xeon, 16
// took the own GEMM from 135 to 157 GFLOP/s on one thread, MKL's packed sgemm 150-170,
// issue 16). The panels per tile are a power of two (a chunk of NCP = 8 panels splits
// evenly).
template <typename T, int VB, int MB>
GL_INLINE void gemm_rows(int64_t kc, int64_t ps, const T* A, int64_t sam, int64_t sak,
                         const T* Wp, T* C, int64_t ldc, int64_t p0, int64_t p1, bool acc,
                         const T* bias) {
  constexpr int PW = kPanel<T>, VPP = PW / Vec<T, VB>::n, NACC = VB == 64 ? 16 : 8;
  constexpr int NW = (NACC / VPP) / MB;
  constexpr int NPW = NW >= 8 ? 8 : NW >= 4 ? 4 : NW >= 2 ? 2 : 1;  // panels per wide tile
  int64_t p = p0;
  auto bp = [&](int64_t q) { return bias ? bias + q * PW : nullptr; };
  if (NPW > 1) {
    for (; p + NPW <= p1; p += NPW)
      gemm_tile<T, VB, MB, NPW>(kc, ps, A, sam, sak, Wp + p * ps, C + p * PW, ldc, acc, bp(p));
  }
  for (; p < p1; ++p)
    gemm_tile<T, VB, MB, 1>(kc, ps, A, sam, sak, Wp + p * ps, C + p * PW, ldc, acc, bp(p));
}

// Rows [m0, m1) x padded columns [n0, n1) (multiples of PW) of C = A (M, K) . Wp, plus C
// (acc) or plus bias (padded like C). Blocked GotoBLAS-style: a block of rows (its C in
// L1/L2), a chunk of K, a chunk of panels (so that panel chunk and row block fit in cache).
// A with sak != 1 (a transposed operand) is first copied, block by block, into `apack`
// (kGemmMC * KC elements, k-major) so that its reads are contiguous and few pages apart.
constexpr int64_t kGemmMC = 64;

// ps: the panel stride, K * PW unless A covers only a range of the packed K (then the
// packed weight's full K * PW, with Wp pointing at the range's first row).
// C2 (optional): the columns from n2 on (a multiple of PW) go to C2 (row stride ldc2) as
// its columns 0, 1, ...: one product written as two matrices, so that the weight
// gradients dW_ih and dW_hh of one GEMM come out as two contiguous tensors.
template <typename T, int VB>
GL_CLONES void gemm_block_v(int64_t m0, int64_t m1, int64_t K, const T* A, int64_t sam,
                            int64_t sak, const T* Wp, int64_t ps, T* C, int64_t ldc, int64_t n0,
                            int64_t n1, bool acc, const T* bias, T* apack, T* C2,
                            int64_t ldc2, int64_t n2) {
  constexpr int64_t PW = kPanel<T>, NCP = 8, MC = kGemmMC;
  constexpr int64_t KC = 1024 / sizeof(T);
  for (int64_t mc = m0; mc < m1; mc += MC) {
    const int64_t mce = std::min(m1, mc + MC);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const bool ac = acc || k0 > 0;
      const T* bs = ac ? nullptr : bias;
      const T* Ak = A + k0 * sak + mc * sam;  // row mc of this block
      int64_t am = sam, ak = sak;
      if (sak != 1 && apack) {  // k-major copy: contiguous reads when A is transposed
        const int64_t rows = mce - mc;
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t m = 0; m < rows; ++m) apack[k * MC + m] = Ak[m * sam + k * sak];
        Ak = apack;
        am = 1;
        ak = MC;
      }
      // panels [n0 / PW, n1 / PW): those before n2 / PW into C, the rest into C2 (its
      // panels counted from 0, the weight's from n2 / PW). A loop over the two parts, not a
      // lambda: a lambda is a function of its own, compiled without this clone's target.
      const int64_t pa = n0 / PW, pb = n1 / PW, ps2 = C2 ? n2 / PW : pb;
      for (int part = 0; part < 2; ++part) {
        const int64_t qa = part == 0 ? pa : std::max(pa, ps2) - ps2;
        const int64_t qb = part == 0 ? std::min(pb, ps2) : pb - ps2;
        const T* Wk = Wp + k0 * PW + (part == 0 ? 0 : ps2 * ps);
        T* Cq = part == 0 ? C : C2;
        const int64_t ld = part == 0 ? ldc : ldc2;
        const T* bq = part == 0 || bs == nullptr ? bs : bs + ps2 * PW;
        for (int64_t q0 = qa; q0 < qb; q0 += NCP) {
          const int64_t q1 = std::min(qb, q0 + NCP);
          // rows RM at a time: 6 x 2 vectors (12 of AVX2's 16 registers, the classic 6x16
          // float tile; 4 x 2 left 8 accumulators: 5-15% slower at the large products on a
          // Zen 3), 8 x 2 with AVX-512's 64-byte vectors (16 accumulators; 4 x 4 and
          // 12 x 2 were slower at B = 8 and 16 on a Xeon); the rest of the rows in tiles
          // of 4, then 1 to 3 (AVX-512) or 1 to 5 (AVX2)
          constexpr int RM = VB == 32 ? 6 : 8;
          int64_t m = 0;
          const int64_t rows = mce - mc;
          for (; m + RM <= rows; m += RM)
            gemm_rows<T, VB, RM>(kc, ps, Ak + m * am, am, ak, Wk, Cq + (mc + m) * ld, ld, q0, q1,
                                 ac, bq);
          if constexpr (VB == 64) {
            if (rows - m >= 4) {
              gemm_rows<T, VB, 4>(kc, ps, Ak + m * am, am, ak, Wk, Cq + (mc + m) * ld, ld, q0,
                                  q1, ac, bq);
              m += 4;
            }
          }
          const T* Am = Ak + m * am;
          T* Cm = Cq + (mc + m) * ld;
          switch (rows - m) {
            case 5: gemm_rows<T, VB, 5>(kc, ps, Am, am, ak, Wk, Cm, ld, q0, q1, ac, bq); break;
            case 4: gemm_rows<T, VB, 4>(kc, ps, Am, am, ak, Wk, Cm, ld, q0, q1, ac, bq); break;
            case 3: gemm_rows<T, VB, 3>(kc, ps, Am, am, ak, Wk, Cm, ld, q0, q1, ac, bq); break;
            case 2: gemm_rows<T, VB, 2>(kc, ps, Am, am, ak, Wk, Cm, ld, q0, q1, ac, bq); break;
            case 1: gemm_rows<T, VB, 1>(kc, ps, Am, am, ak, Wk, Cm, ld, q0, q1, ac, bq); break;
            default: break;
          }
        }
      }
    }
  }
}

// 64-byte vectors where the CPU has AVX-512 (fewer instructions per FMA), else 32-byte ones.
inline bool wide_vectors() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool wide = __builtin_cpu_supports("avx512f");
  return wide;
#else
  return false;
#endif
}

template <typename T>
inline void gemm_block(int64_t m0, int64_t m1, int64_t K, const T* A, int64_t sam, int64_t sak,
                       const T* Wp, T* C, int64_t ldc, int64_t n0, int64_t n1, bool acc,
                       const T* bias, T* apack, int64_t ps = 0, T* C2 = nullptr,
                       int64_t ldc2 = 0, int64_t n2 = 0) {
  if (ps == 0) ps = K * kPanel<T>;
  if (wide_vectors()) {
    gemm_block_v<T, 64>(m0, m1, K, A, sam, sak, Wp, ps, C, ldc, n0, n1, acc, bias, apack, C2,
                        ldc2, n2);
  } else {
    gemm_block_v<T, 32>(m0, m1, K, A, sam, sak, Wp, ps, C, ldc, n0, n1, acc, bias, apack, C2,
                        ldc2, n2);
  }
}

// The recurrent case: row-major A (M, K), all rows.
template <typename T>
inline void small_gemm(int64_t M, int64_t K, const T* A, int64_t lda, const T* Wp, T* C,
                       int64_t ldc, int64_t n0, int64_t n1, bool acc) {
  gemm_block<T>(0, M, K, A, lda, 1, Wp, C, ldc, n0, n1, acc, nullptr, nullptr);
}

// Panels of PW columns from row-major rows: rows [k0, k0 + rows) of a (K, N) matrix whose
// row k is src + (k - k0) * ld; columns beyond N are zero (dst must start zeroed or be
// fully overwritten: padded columns are written as zero here).
template <typename T>
void pack_rows(const T* src, int64_t ld, int64_t rows, int64_t k0, int64_t K, int64_t N, T* dst) {
  constexpr int64_t PW = kPanel<T>;
  const int64_t panels = (N + PW - 1) / PW;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, rows * PW));
  at::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c0 = p * PW, nc = std::min(PW, N - c0);
      T* out = dst + (p * K + k0) * PW;
      for (int64_t k = 0; k < rows; ++k) {
        std::memcpy(out + k * PW, src + k * ld + c0, sizeof(T) * nc);
        if (nc < PW) std::memset(out + k * PW + nc, 0, sizeof(T) * (PW - nc));
      }
    }
  });
}

// C (M, N) = A (M, K) . B (K, N) for large matrices, in parallel: A (m, k) at
// A[m * sam + k * sak], B given as panels (pack_rows), C row-major (ldc >= padded N).
// acc: C += A . B instead (a product summed over blocks of K). C2, ldc2, n2: the columns
// from n2 on into C2 instead (gemm_block_v).
template <typename T>
void big_gemm(int64_t M, int64_t K, int64_t N, const T* A, int64_t sam, int64_t sak,
              const T* Bp, T* C, int64_t ldc, const T* bias, bool acc = false,
              T* C2 = nullptr, int64_t ldc2 = 0, int64_t n2 = 0) {
  constexpr int64_t PW = kPanel<T>;
  const int64_t Np = (N + PW - 1) / PW * PW;
  const int64_t rows = kGemmMC, tasks = (M + rows - 1) / rows;
  const int64_t grain = M * K * N >= (1 << 18) ? 1 : tasks;  // small: no parallel region
  at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
    // the transposed copy of A holds kGemmMC rows of one K chunk (at most KC, K if less)
    std::vector<T> apack(sak != 1 ? kGemmMC * std::min<int64_t>(K, 1024 / sizeof(T)) : 0);
    gemm_block<T>(t0 * rows, std::min(M, t1 * rows), K, A, sam, sak, Bp, C, ldc, 0, Np, acc,
                  bias, apack.empty() ? nullptr : apack.data(), 0, C2, ldc2, n2);
  });
}

// C[m, n] (+)= bias[n] + sum_k A[m, k] W[n, k] for a few rows (M <= 4) and an unpacked
// row-major W (N, K): dot products over contiguous k, NR weight rows at a time. For weights
// used once (LSTMCell), where packing would cost more than the product.
template <typename T, int MB, int NR>
GL_INLINE void gemv_nt_rows(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict W,
                            int64_t n0, int64_t n1, T* __restrict C, int64_t ldc, bool acc,
                            const T* __restrict bias) {
  using V = typename Vec<T, 32>::type;
  constexpr int L = Vec<T, 32>::n;
  const int64_t Kv = K / L * L;
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) {
    V c[MB][NR];
    GL_UNROLL
    for (int m = 0; m < MB; ++m)
      GL_UNROLL
      for (int r = 0; r < NR; ++r) c[m][r] = V{};
    for (int64_t k = 0; k < Kv; k += L) {
      V w[NR];
      GL_UNROLL
      for (int r = 0; r < NR; ++r) __builtin_memcpy(&w[r], W + (n + r) * K + k, sizeof(V));
      GL_UNROLL
      for (int m = 0; m < MB; ++m) {
        V a;
        __builtin_memcpy(&a, A + m * lda + k, sizeof(V));
        GL_UNROLL
        for (int r = 0; r < NR; ++r) c[m][r] += a * w[r];
      }
    }
    GL_UNROLL
    for (int m = 0; m < MB; ++m)
      GL_UNROLL
      for (int r = 0; r < NR; ++r) {
        T sum = T(0);
        GL_UNROLL
        for (int l = 0; l < L; ++l) sum += c[m][r][l];
        for (int64_t k = Kv; k < K; ++k) sum += A[m * lda + k] * W[(n + r) * K + k];
        T* out = C + m * ldc + n + r;
        *out = sum + (acc ? *out : (bias ? bias[n + r] : T(0)));
      }
  }
  for (; n < n1; ++n)
    GL_UNROLL
    for (int m = 0; m < MB; ++m) {
      T sum = T(0);
      for (int64_t k = 0; k < K; ++k) sum += A[m * lda + k] * W[n * K + k];
      T* out = C + m * ldc + n;
      *out = sum + (acc ? *out : (bias ? bias[n] : T(0)));
    }
}

template <typename T>
GL_CLONES void gemv_nt(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda, const T* W,
                       T* C, int64_t ldc, bool acc, const T* bias) {
  for (int64_t m = 0; m < M; m += 4) {
    const T* Am = A + m * lda;
    T* Cm = C + m * ldc;
    switch (std::min<int64_t>(4, M - m)) {
      case 1: gemv_nt_rows<T, 1, 8>(K, Am, lda, W, 0, N, Cm, ldc, acc, bias); break;
      case 2: gemv_nt_rows<T, 2, 4>(K, Am, lda, W, 0, N, Cm, ldc, acc, bias); break;
      case 3: gemv_nt_rows<T, 3, 2>(K, Am, lda, W, 0, N, Cm, ldc, acc, bias); break;
      default: gemv_nt_rows<T, 4, 2>(K, Am, lda, W, 0, N, Cm, ldc, acc, bias); break;
    }
  }
}

// C[m, n0:n1] (+)= sum_k A[m, k] W[k, n0:n1] for an unpacked row-major W (K, N), four rows
// at a time: for each k an axpy of W's row k (contiguous) into NV vectors of C held in
// registers. The backward's dh_{t-1} = dG W_hh at B = 1 reads W_hh as it is, with no
// packed copy (issue 16), and dx = dG W_ih for few rows (kPackRows).
template <typename T, int MB, int NV>
GL_INLINE void gemv_nn_rows(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict W,
                            int64_t ldw, int64_t n0, int64_t n1, T* __restrict C, int64_t ldc,
                            bool acc) {
  using V = typename Vec<T, 32>::type;
  constexpr int L = Vec<T, 32>::n;
  int64_t n = n0;
  for (; n + NV * L <= n1; n += NV * L) {
    V c[MB][NV];
    GL_UNROLL
    for (int m = 0; m < MB; ++m)
      GL_UNROLL
      for (int v = 0; v < NV; ++v) {
        if (acc) {
          __builtin_memcpy(&c[m][v], C + m * ldc + n + v * L, sizeof(V));
        } else {
          c[m][v] = V{};
        }
      }
    for (int64_t k = 0; k < K; ++k) {
      V w[NV];
      GL_UNROLL
      for (int v = 0; v < NV; ++v) __builtin_memcpy(&w[v], W + k * ldw + n + v * L, sizeof(V));
      GL_UNROLL
      for (int m = 0; m < MB; ++m) {
        const T a = A[m * lda + k];
        GL_UNROLL
        for (int v = 0; v < NV; ++v) c[m][v] += a * w[v];
      }
    }
    GL_UNROLL
    for (int m = 0; m < MB; ++m)
      GL_UNROLL
      for (int v = 0; v < NV; ++v) __builtin_memcpy(C + m * ldc + n + v * L, &c[m][v], sizeof(V));
  }
  for (; n < n1; ++n)
    GL_UNROLL
    for (int m = 0; m < MB; ++m) {
      T sum = acc ? C[m * ldc + n] : T(0);
      for (int64_t k = 0; k < K; ++k) sum += A[m * lda + k] * W[k * ldw + n];
      C[m * ldc + n] = sum;
    }
}

template <typename T>
GL_CLONES void gemv_nn(int64_t M, int64_t K, int64_t n0, int64_t n1, const T* A, int64_t lda,
                       const T* W, int64_t ldw, T* C, int64_t ldc, bool acc) {
  for (int64_t m = 0; m < M; m += 4) {
    const T* Am = A + m * lda;
    T* Cm = C + m * ldc;
    switch (std::min<int64_t>(4, M - m)) {
      case 1: gemv_nn_rows<T, 1, 8>(K, Am, lda, W, ldw, n0, n1, Cm, ldc, acc); break;
      case 2: gemv_nn_rows<T, 2, 4>(K, Am, lda, W, ldw, n0, n1, Cm, ldc, acc); break;
      case 3: gemv_nn_rows<T, 3, 4>(K, Am, lda, W, ldw, n0, n1, Cm, ldc, acc); break;
      default: gemv_nn_rows<T, 4, 2>(K, Am, lda, W, ldw, n0, n1, Cm, ldc, acc); break;
    }
  }
}

// gemm modes: 0 = auto, 1 = plain BLAS, 2 = MKL packed (float32 only, else plain),
// 3 = at::mm_out (the fallback), 4 = small_gemm above (the default), 5 = gemv_nt / gemv_nn
// (a few rows, the weight unpacked: the default at B <= kGemvRows and for LSTMCell).
int g_gemm_mode = 0;
// Rows (the batch) up to which the recurrent products read the weight unpacked (mode 5):
// no per-call packed copy of W_hh (4H x H), in forward nor in backward (issue 16: peak
// memory at B = 1). One row only: at B = 1 a training step is as fast as over the packed
// copy (ab_kernels, H = 128: 0.98-1.00x), at B = 2..4 it is 0.65-0.72x (BENCHMARKS.md).
constexpr int64_t kGemvRows = 1;
// Rows from which the large non-recurrent products (x W_ih^T, dx = dG W_ih) pack the weight
// for the own GEMM; below, they read it unpacked (gemv_nt / gemv_nn). Neither calls MKL: its
// sgemm allocates per-thread buffers on first use (2 x 330 KB here, issue 16), more than a
// B = 1 step's own buffers, and runs its AVX2 path on this AMD machine anyway.
constexpr int64_t kPackRows = 32;
int g_fused_step = 1;  // 0: GEMM, then the pointwise pass, as two phases (for comparison)
int g_adaptive = 1;    // per-step split: 1 measured once per shape (StepSplit), 0 always, 2 never

// C (M, N) = A (M, K) . op(W) with row-major W: NT means W is (N, K) and op = transpose,
// NN means W is (K, N). One object per weight and sequence; `run` allocates nothing.
// C buffers have row stride ldc() and group g starts at column col(g).
template <typename T>
struct WeightGemm {
  static constexpr int64_t PW = kPanel<T>;
  const T* W;
  int M, N, K;
  bool nt;
  int64_t groups, Hg, Hgp;
  int mode;       // resolved: 1 plain, 2 packed, 3 aten, 4 small_gemm, 5 gemv_nt
  Tensor packed;  // mode 2: MKL's packed weight; mode 4: the panels
  Tensor w_tensor;

  // `reuse`: how many calls will share this weight (the sequence length). `force`: a mode
  // (1..5) instead of g_gemm_mode (gemm_plan.h's measured choice), -1 none.
  WeightGemm(const Tensor& w, int64_t M_, bool nt_, int64_t reuse, int64_t groups_ = 1,
             int force = -1)
      : W(w.data_ptr<T>()), M(int(M_)), nt(nt_), groups(groups_), w_tensor(w) {
    N = int(nt ? w.size(0) : w.size(1));
    K = int(nt ? w.size(1) : w.size(0));
    Hg = N / groups;
    const Blas& blas = Blas::get();
    const bool have_plain = std::is_same<T, float>::value ? blas.sgemm != nullptr
                                                           : blas.dgemm != nullptr;
    const bool can_pack = std::is_same<T, float>::value && blas.pack_size != nullptr;
    int want = force > 0 ? force : g_gemm_mode;
    if (want == 0) want = choose(can_pack, reuse);
    if (want == 2 && !can_pack) want = 1;
    if (want == 5 && M > 4) want = 1;  // the forced mode: gemv up to 4 rows
    if (want == 1 && !have_plain) want = 3;
    mode = want;
    Hgp = own() ? (Hg + PW - 1) / PW * PW : Hg;
    if (mode == 2) pack_mkl();
    if (mode == 4) pack_panels();
  }

  // Measured (bench_gemm) on a 2-core AMD EPYC (Zen 4): small_gemm beats MKL's sgemm and
  // packed sgemm_compute at every recurrent shape of the benchmark, B = 1..64; MKL stays
  // available as modes 1 and 2.
  // Packing costs about one call, so a weight used once or twice (LSTMCell, T <= 2) goes to
  // the BLAS directly. At a few rows the products read the weight unpacked (mode 5) over
  // any sequence length: the packed copy (as large as the weight) is then most of a
  // step's extra memory, and the unpacked loops cost about as much at one row.
  int choose(bool /*can_pack*/, int64_t reuse) const {
    if (M <= kGemvRows && (nt || reuse > 2)) return 5;
    if (reuse > 2) return 4;
    return (nt && M <= 4) ? 5 : 1;
  }

  bool own() const { return mode == 4; }
  int64_t ldc() const { return groups * Hgp; }
  int64_t col(int64_t g) const { return g * Hgp; }

  void pack_mkl() {
    if constexpr (std::is_same<T, float>::value) {
      const Blas& blas = Blas::get();
      size_t bytes = blas.pack_size(kBMatrix, M, N, K);
      packed = at::empty({int64_t(bytes / sizeof(float)) + 16}, w_tensor.options());
      blas.pack(kRowMajor, kBMatrix, nt ? kTrans : kNoTrans, M, N, K, 1.0f, W, nt ? K : N,
                packed.data_ptr<float>());
    }
  }

  void pack_panels() {
    const int64_t Np = ldc(), panels = Np / PW;
    packed = at::zeros({panels * K * PW}, w_tensor.options());
    T* dst = packed.data_ptr<T>();
    if (!nt && groups == 1) return pack_rows<T>(W, N, K, 0, K, N, dst);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < Hg; ++j) {
        const int64_t n = g * Hg + j, np = g * Hgp + j, p = np / PW, c = np % PW;
        T* out = dst + p * K * PW + c;
        if (nt) {
          const T* src = W + n * K;  // row n of W is column n of op(W)
          for (int64_t k = 0; k < K; ++k) out[k * PW] = src[k];
        } else {
          for (int64_t k = 0; k < K; ++k) out[k * PW] = W[k * N + n];
        }
      }
  }

  // Padded columns [n0, n1) (multiples of PW) with the small GEMM (mode 4 only).
  void run_cols(const T* A, int64_t lda, bool acc, T* C, int64_t ldc_, int64_t n0,
                int64_t n1) const {
    small_gemm<T>(M, K, A, lda, packed.data_ptr<T>(), C, ldc_, n0, n1, acc);
  }

  // Mode 5: columns split over threads in blocks of 64 when the product is large enough.
  void run_gemv(const T* A, int64_t lda, bool acc, T* C, int64_t ldc_, bool par) const {
    auto cols = [&](int64_t n0, int64_t n1) {
      if (nt) {
        gemv_nt<T>(M, K, n1 - n0, A, lda, W + n0 * K, C + n0, ldc_, acc, nullptr);
      } else {
        gemv_nn<T>(M, K, n0, n1, A, lda, W, N, C, ldc_, acc);
      }
    };
    constexpr int64_t NB = 64;
    const int64_t tasks = (N + NB - 1) / NB;
    if (par && at::get_num_threads() > 1 && int64_t(M) * N * K >= (1 << 17) && tasks > 1) {
      at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
        cols(t0 * NB, std::min<int64_t>(N, t1 * NB));
      });
    } else {
      cols(0, N);
    }
  }

  // All columns; beta is 0 or 1; par: may split the columns over threads.
  void run(const T* A, int64_t lda, T beta, T* C, int64_t ldc_, bool par = true) const {
    if (M == 0 || N == 0) return;
    if (mode == 5) return run_gemv(A, lda, beta != T(0), C, ldc_, par);
    if (mode == 4) {
      const int64_t work = int64_t(M) * N * K;
      const int64_t threads = at::get_num_threads();
      const int64_t panels = ldc() / PW;
      const int64_t per = M < 4 ? 4 : 1;  // panels per task (one row: the wide tile)
      const int64_t tasks = (panels + per - 1) / per;
      if (par && threads > 1 && work >= (1 << 17) && tasks > 1) {
        at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
          run_cols(A, lda, beta != T(0), C, ldc_, t0 * per * PW,
                   std::min(panels, t1 * per) * PW);
        });
      } else {
        run_cols(A, lda, beta != T(0), C, ldc_, 0, panels * PW);
      }
      return;
    }
    if (mode == 2) {
      if constexpr (std::is_same<T, float>::value) {
        Blas::get().compute(kRowMajor, kNoTrans, kPacked, M, N, K, A, int(lda),
                            packed.data_ptr<float>(), nt ? K : N, beta, C, int(ldc_));
        return;
      }
    }
    if (mode == 1) {
      // Row-major C = A op(W) is column-major C^T = op(W)^T A^T.
      const char* ta = nt ? "T" : "N";
      const char* tb = "N";
      const int lw = nt ? K : N, la = int(lda), lc = int(ldc_);
      const T one = T(1);
      if constexpr (std::is_same<T, float>::value) {
        Blas::get().sgemm(ta, tb, &N, &M, &K, &one, W, &lw, A, &la, &beta, C, &lc);
      } else {
        Blas::get().dgemm(ta, tb, &N, &M, &K, &one, W, &lw, A, &la, &beta, C, &lc);
      }
      return;
    }
    auto opts = w_tensor.options();
    Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opts);
    Tensor c = at::from_blob(C, {M, N}, {ldc_, 1}, opts);
    Tensor w = nt ? w_tensor.t() : w_tensor;
    if (beta == T(0)) {
      at::mm_out(c, a, w);
    } else {
      c.mul_(beta).addmm_(a, w);
    }
  }
};

// Microbenchmark of one recurrent GEMM shape: seconds per call (this thread's CPU time when
// `cpu`, for single-threaded runs on a busy machine), C (M, N) = A (M, K) W^T with W (N, K).
double bench_gemm(int64_t M, int64_t K, int64_t N, int64_t mode, int64_t reps, bool dbl,
                  bool cpu) {
  constexpr int64_t kMaxDim = 1 << 14;
  TORCH_CHECK(M >= 1 && K >= 1 && N >= 1 && M <= kMaxDim && K <= kMaxDim && N <= kMaxDim,
              "bench_gemm: M, K, N must be in 1..", kMaxDim, ", got ", M, ", ", K, ", ", N);
  TORCH_CHECK(mode >= 0 && mode <= 5, "bench_gemm: mode must be 0..5, got ", mode);
  TORCH_CHECK(reps >= 1, "bench_gemm: reps must be >= 1, got ", reps);
  auto run = [&](auto zero) -> double {
    using T = decltype(zero);
    auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    Tensor w = at::randn({N, K}, opts), a = at::randn({M, K}, opts);
    const int saved = g_gemm_mode;
    g_gemm_mode = int(mode);
    WeightGemm<T> g(w, M, true, reps);
    g_gemm_mode = saved;
    Tensor c = at::empty({M, g.ldc()}, opts);
    for (int i = 0; i < 3; ++i) g.run(a.data_ptr<T>(), K, T(0), c.data_ptr<T>(), g.ldc());
    auto clock = [&] {
      timespec ts;
      clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
      return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
    };
    const double t0 = clock();
    for (int64_t i = 0; i < reps; ++i) g.run(a.data_ptr<T>(), K, T(0), c.data_ptr<T>(), g.ldc());
    return (clock() - t0) / double(reps);
  };
  return dbl ? run(0.0) : run(0.0f);
}

}  // namespace
