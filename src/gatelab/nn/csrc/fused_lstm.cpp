// gatelab fused CPU kernels: one LSTM layer-direction over a whole sequence, every cell
// spec of gatelab.nn.equations.CellSpec, forward and hand-written backward.
//
// The math is gatelab/cells.py's `lstm_step`; the variable names follow it (i, f, g, o, c,
// h, c_prev) and the derivation (dG = d pre-activations, dc, dh).
//
// Layout: time-major x (T, B, I); gate blocks of H columns in i, f, g, o order without the
// removed gates (G = number of gates with weights, GH = G * H); h has P = proj_size or H
// features. `lengths` gives a prefix mask: steps t >= lengths[b] are padding (state
// carried, output, trace and gradients zero there).
//
// Speed: the input projection of all steps is one GEMM; per step one GEMM h_{t-1} W_hh^T
// and one pointwise pass over (B, H) that writes the gate activations backward needs (they
// are the trace). Backward: per step one pointwise pass and one GEMM dG_t W_hh; the weight
// gradients and dx are large GEMMs and reductions after the loop. The GEMMs are this
// file's register-tiled kernel over weights packed once per call (see "small GEMM"); MKL's
// sgemm and packed sgemm_compute (resolved at run time from libtorch) remain as options.
//
// Vectorisation without -march=native: the pointwise kernels are plain loops compiled
// several times (GCC/Clang `target_clones`: AVX-512, AVX2+FMA, baseline) and picked at
// load time for the CPU that runs them, so one build runs on any x86-64. float32 uses the
// polynomial exp below (Cephes' expf, ~2 ulp) so that sigmoid/tanh vectorise; float64
// uses std::exp/std::tanh. No -ffast-math: NaN propagates through every kernel.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GL_CLONES
#endif
#define GL_INLINE static inline __attribute__((always_inline))

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

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
  for (int m = 0; m < MB; ++m)
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
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(&w[v], Wp + (v / VPP) * ps + k * PW + (v % VPP) * L, sizeof(V));
    for (int m = 0; m < MB; ++m) {
      const T a = A[m * sam + k * sak];
      for (int v = 0; v < NV; ++v) c[m][v] += a * w[v];
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(C + m * ldc + (v / VPP) * PW + (v % VPP) * L, &c[m][v], sizeof(V));
}

// Panels [p0, p1); kc steps of k; ps is the panel stride (panel length K * PW). Tiles of
// 8 independent accumulator vectors where the rows allow.
template <typename T, int VB, int MB>
GL_INLINE void gemm_rows(int64_t kc, int64_t ps, const T* A, int64_t sam, int64_t sak,
                         const T* Wp, T* C, int64_t ldc, int64_t p0, int64_t p1, bool acc,
                         const T* bias) {
  constexpr int PW = kPanel<T>, VPP = PW / Vec<T, VB>::n;
  constexpr int NPW = (8 / VPP) / MB > 0 ? (8 / VPP) / MB : 1;  // panels per wide tile
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
template <typename T, int VB>
GL_CLONES void gemm_block_v(int64_t m0, int64_t m1, int64_t K, const T* A, int64_t sam,
                            int64_t sak, const T* Wp, int64_t ps, T* C, int64_t ldc, int64_t n0,
                            int64_t n1, bool acc, const T* bias, T* apack) {
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
      const T* Wk = Wp + k0 * PW;
      for (int64_t q0 = n0 / PW, pend = n1 / PW; q0 < pend; q0 += NCP) {
        const int64_t q1 = std::min(pend, q0 + NCP);
        int64_t m = 0;
        const int64_t rows = mce - mc;
        for (; m + 4 <= rows; m += 4)
          gemm_rows<T, VB, 4>(kc, ps, Ak + m * am, am, ak, Wk, C + (mc + m) * ldc, ldc, q0, q1,
                              ac, bs);
        const T* Am = Ak + m * am;
        T* Cm = C + (mc + m) * ldc;
        switch (rows - m) {
          case 3: gemm_rows<T, VB, 3>(kc, ps, Am, am, ak, Wk, Cm, ldc, q0, q1, ac, bs); break;
          case 2: gemm_rows<T, VB, 2>(kc, ps, Am, am, ak, Wk, Cm, ldc, q0, q1, ac, bs); break;
          case 1: gemm_rows<T, VB, 1>(kc, ps, Am, am, ak, Wk, Cm, ldc, q0, q1, ac, bs); break;
          default: break;
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
                       const T* bias, T* apack, int64_t ps = 0) {
  if (ps == 0) ps = K * kPanel<T>;
  if (wide_vectors()) {
    gemm_block_v<T, 64>(m0, m1, K, A, sam, sak, Wp, ps, C, ldc, n0, n1, acc, bias, apack);
  } else {
    gemm_block_v<T, 32>(m0, m1, K, A, sam, sak, Wp, ps, C, ldc, n0, n1, acc, bias, apack);
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
template <typename T>
void big_gemm(int64_t M, int64_t K, int64_t N, const T* A, int64_t sam, int64_t sak,
              const T* Bp, T* C, int64_t ldc, const T* bias) {
  constexpr int64_t PW = kPanel<T>;
  const int64_t Np = (N + PW - 1) / PW * PW;
  const int64_t rows = kGemmMC, tasks = (M + rows - 1) / rows;
  const int64_t grain = M * K * N >= (1 << 18) ? 1 : tasks;  // small: no parallel region
  at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
    std::vector<T> apack(sak != 1 ? kGemmMC * (1024 / sizeof(T)) : 0);
    gemm_block<T>(t0 * rows, std::min(M, t1 * rows), K, A, sam, sak, Bp, C, ldc, 0, Np, false,
                  bias, apack.empty() ? nullptr : apack.data());
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
    for (int m = 0; m < MB; ++m)
      for (int r = 0; r < NR; ++r) c[m][r] = V{};
    for (int64_t k = 0; k < Kv; k += L) {
      V w[NR];
      for (int r = 0; r < NR; ++r) __builtin_memcpy(&w[r], W + (n + r) * K + k, sizeof(V));
      for (int m = 0; m < MB; ++m) {
        V a;
        __builtin_memcpy(&a, A + m * lda + k, sizeof(V));
        for (int r = 0; r < NR; ++r) c[m][r] += a * w[r];
      }
    }
    for (int m = 0; m < MB; ++m)
      for (int r = 0; r < NR; ++r) {
        T sum = T(0);
        for (int l = 0; l < L; ++l) sum += c[m][r][l];
        for (int64_t k = Kv; k < K; ++k) sum += A[m * lda + k] * W[(n + r) * K + k];
        T* out = C + m * ldc + n + r;
        *out = sum + (acc ? *out : (bias ? bias[n + r] : T(0)));
      }
  }
  for (; n < n1; ++n)
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

// gemm modes: 0 = auto, 1 = plain BLAS, 2 = MKL packed (float32 only, else plain),
// 3 = at::mm_out (the fallback), 4 = small_gemm above (the default), 5 = gemv_nt (a few
// rows, NT, weight used once).
int g_gemm_mode = 0;
int g_fused_step = 1;  // 0: GEMM, then the pointwise pass, as two phases (for comparison)
int g_adaptive = 1;    // 0: always split steps over threads when big enough (for comparison)

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

  // `reuse`: how many calls will share this weight (the sequence length).
  WeightGemm(const Tensor& w, int64_t M_, bool nt_, int64_t reuse, int64_t groups_ = 1)
      : W(w.data_ptr<T>()), M(int(M_)), nt(nt_), groups(groups_), w_tensor(w) {
    N = int(nt ? w.size(0) : w.size(1));
    K = int(nt ? w.size(1) : w.size(0));
    Hg = N / groups;
    const Blas& blas = Blas::get();
    const bool have_plain = std::is_same<T, float>::value ? blas.sgemm != nullptr
                                                           : blas.dgemm != nullptr;
    const bool can_pack = std::is_same<T, float>::value && blas.pack_size != nullptr;
    int want = g_gemm_mode;
    if (want == 0) want = choose(can_pack, reuse);
    if (want == 2 && !can_pack) want = 1;
    if (want == 5 && !(nt && M <= 4)) want = 1;
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
  // the BLAS directly.
  int choose(bool /*can_pack*/, int64_t reuse) const {
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

  // All columns; beta is 0 or 1; par: may split the columns over threads.
  void run(const T* A, int64_t lda, T beta, T* C, int64_t ldc_, bool par = true) const {
    if (M == 0 || N == 0) return;
    if (mode == 5) return gemv_nt<T>(M, K, N, A, lda, W, C, ldc_, beta != T(0), nullptr);
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

// ----------------------------------------------------------------------- profiling
// Wall time per phase, summed while enabled (set_profile); for the benchmark's breakdown.
enum { kPFwdProj, kPFwdGemm, kPFwdPoint, kPFwdAll, kPBwdGemm, kPBwdPoint, kPBwdAfter, kPBwdAll,
       kPSlots };
int g_profile = 0;  // 0 off, 1 wall clock, 2 this thread's CPU time (robust on a busy machine)
double g_prof[kPSlots] = {0};

inline double now_s() {
  if (g_profile == 2) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Tick {
  int slot;
  double t0 = 0;
  explicit Tick(int s) : slot(s) {
    if (g_profile) t0 = now_s();
  }
  ~Tick() {
    if (g_profile) g_prof[slot] += now_s() - t0;
  }
};

// ----------------------------------------------------------------------- scalar math

// exp for float: Cephes expf (range reduction by ln 2, degree-6 polynomial), ~2 ulp on
// [-87, 88]; arguments are clamped there (sigmoid/tanh saturate long before), except that
// past float's range (x > 88.72) the result is inf as expf's: then sigmoid(-inf) is 0, not
// 6e-39, and 0 * inf stays NaN as in torch (an identity candidate times a closed gate).
// Branch-free (selects) so that loops over it vectorise; NaN in gives NaN out.
GL_INLINE float exp_approx(float x) {
  const bool overflow = x > 88.72f;
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t k = __builtin_bit_cast(int32_t, t) - __builtin_bit_cast(int32_t, magic);
  const float scale = __builtin_bit_cast(float, (k + 127) << 23);
  return overflow ? __builtin_inff() : p * scale;
}

GL_INLINE float sigmoid_(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
GL_INLINE double sigmoid_(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// tanh for float: Cephes tanhf. |x| < 0.625: odd polynomial; else 1 - 2 / (exp(2|x|) + 1).
GL_INLINE float tanh_(float x) {
  const float ax = __builtin_fabsf(x);
  const float s = x * x;
  const float small =
      ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s +
        1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
  const float e = exp_approx(2.0f * ax);
  const float big = __builtin_copysignf(1.0f - 2.0f / (e + 1.0f), x);
  return ax < 0.625f ? small : big;
}
GL_INLINE double tanh_(double x) { return std::tanh(x); }

template <typename T>
GL_INLINE void act_inplace(T* __restrict a, int64_t n, bool use_tanh) {
  if (use_tanh) {
    for (int64_t j = 0; j < n; ++j) a[j] = tanh_(a[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) a[j] = sigmoid_(a[j]);
  }
}

// d act / d pre from the activation a: sigmoid a (1 - a), tanh 1 - a^2.
template <typename T>
GL_INLINE void act_grad(T* __restrict d, const T* __restrict dy, const T* __restrict a,
                        int64_t n, bool use_tanh) {
  if (use_tanh) {
    for (int64_t j = 0; j < n; ++j) d[j] = dy[j] * (T(1) - a[j] * a[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) d[j] = dy[j] * (a[j] * (T(1) - a[j]));
  }
}

// Row mean and 1/sqrt(var + eps) (biased variance, as torch.nn.functional.layer_norm).
template <typename T>
GL_INLINE void row_moments(const T* __restrict x, int64_t n, double eps, double* mean,
                           double* rstd) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += double(x[j]);
  const double m = s / double(n);
  double v = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = double(x[j]) - m;
    v += d * d;
  }
  *mean = m;
  *rstd = 1.0 / std::sqrt(v / double(n) + eps);
}

// ----------------------------------------------------------------------- spec

struct Spec {
  bool has_i, has_f, has_o;  // gates with weights (has_f: forget weights, not coupled)
  bool coupled, peep, cand_tanh, out_tanh, gate_tanh, ln;
  int oi, of, og, oo;  // block offsets (in units of H) in the gate axis; -1 if absent
  int G;

  explicit Spec(int64_t flags = 0) {
    const bool input_gate = flags & 1, forget_gate = flags & 2, output_gate = flags & 4;
    coupled = flags & 8;
    peep = flags & 16;
    cand_tanh = flags & 32;
    out_tanh = flags & 64;
    gate_tanh = flags & 128;
    ln = flags & 256;
    has_i = input_gate;
    has_f = forget_gate && !coupled;
    has_o = output_gate;
    int k = 0;
    oi = has_i ? k++ : -1;
    of = has_f ? k++ : -1;
    og = k++;
    oo = has_o ? k++ : -1;
    G = k;
  }
};

constexpr double kLnEps = 1e-5;  // gatelab.nn.equations.LAYERNORM_EPS

// ----------------------------------------------------------------------- forward step

template <typename T>
struct FwdStep {
  Spec s;
  int64_t B, H, P, GH;
  const T* xw;     // (B, GH): LN(x W_ih^T) + b_ih + b_hh of this step, row stride xw_ld
  int64_t xw_ld;
  const T* hw;     // h_{t-1} W_hh^T: row stride hw_ld, gate k at column k * hw_gs
  int64_t hw_ld, hw_gs;
  T* acts;         // (B, GH): gate activations (the trace), pre-activations meanwhile
  T* xhat_hh;      // (B, GH) layer norm only
  T* rstd_hh;      // (B)
  const T *ln_hh_w, *ln_hh_b, *ln_c_w, *ln_c_b;
  T* c;            // (B, H) state: c_{t-1} in, c_t out (real rows)
  T* c_out;        // (B, H) c_t, zero on padded rows
  T* xhat_c;       // (B, H) layer norm only
  T* rstd_c;       // (B)
  T* y;            // (B, H) tanh(LN(c_t)) (or its identity)
  T* hr;           // (B, H) o * y, row stride hr_ld
  int64_t hr_ld;
  T* h_state;      // (B, P) h_t, written here only without projection (padded rows: h_prev)
  const T* h_prev; // (B, P) h_{t-1}: the GEMM reads it meanwhile, so h_t goes elsewhere
  const T *wci, *wcf, *wco;
  const int64_t* len;
  int64_t t;
};

template <typename T>
GL_CLONES void fwd_rows(const FwdStep<T>& a, int64_t b, int64_t j0, int64_t j1) {
  const Spec& s = a.s;
  const int64_t H = a.H, GH = a.GH, n = j1 - j0;
  T* A = a.acts + b * GH;  // may be the same memory as X (in place)
  T* __restrict cs = a.c + b * H + j0;
  T* __restrict co = a.c_out + b * H + j0;
  T* __restrict y = a.y + b * H + j0;
  T* __restrict hr = a.hr + b * a.hr_ld + j0;
  const bool real = a.len == nullptr || a.t < a.len[b];
  if (!real) {
    for (int k = 0; k < s.G; ++k) std::memset(A + k * H + j0, 0, sizeof(T) * n);
    std::memset(co, 0, sizeof(T) * n);
    std::memset(y, 0, sizeof(T) * n);
    std::memset(hr, 0, sizeof(T) * n);
    if (a.h_state) std::memcpy(a.h_state + b * a.P + j0, a.h_prev + b * a.P + j0, sizeof(T) * n);
    if (s.ln) {
      for (int k = 0; k < s.G; ++k) std::memset(a.xhat_hh + b * GH + k * H + j0, 0, sizeof(T) * n);
      std::memset(a.xhat_c + b * H + j0, 0, sizeof(T) * n);
      a.rstd_hh[b] = T(0);
      a.rstd_c[b] = T(0);
    }
    return;
  }
  const T* X = a.xw + b * a.xw_ld;
  const T* __restrict HW = a.hw + b * a.hw_ld;
  const int64_t gs = a.hw_gs;
  // pre-activations: xw + hw (or + LN(hw); layer norm rows are whole: j0 = 0, j1 = H)
  if (s.ln) {
    double sum = 0, var = 0;
    for (int k = 0; k < s.G; ++k)
      for (int64_t j = 0; j < H; ++j) sum += double(HW[k * gs + j]);
    const double mean = sum / double(GH);
    for (int k = 0; k < s.G; ++k)
      for (int64_t j = 0; j < H; ++j) {
        const double d = double(HW[k * gs + j]) - mean;
        var += d * d;
      }
    const double rstd = 1.0 / std::sqrt(var / double(GH) + kLnEps);
    T* __restrict xh = a.xhat_hh + b * GH;
    const T* __restrict gw = a.ln_hh_w;
    const T* __restrict gb = a.ln_hh_b;
    for (int k = 0; k < s.G; ++k)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t q = k * H + j;
        const T v = T((double(HW[k * gs + j]) - mean) * rstd);
        xh[q] = v;
        A[q] = X[q] + (v * gw[q] + gb[q]);
      }
    a.rstd_hh[b] = T(rstd);
  } else {
    for (int k = 0; k < s.G; ++k) {
      const int64_t o = k * H + j0, oh = k * gs + j0;
      for (int64_t j = 0; j < n; ++j) A[o + j] = X[o + j] + HW[oh + j];
    }
  }
  T* __restrict ai = s.has_i ? A + s.oi * H + j0 : nullptr;
  T* __restrict af = s.has_f ? A + s.of * H + j0 : nullptr;
  T* __restrict ag = A + s.og * H + j0;
  T* __restrict ao = s.has_o ? A + s.oo * H + j0 : nullptr;
  if (s.peep) {
    if (ai) {
      const T* __restrict w = a.wci + j0;
      for (int64_t j = 0; j < n; ++j) ai[j] += w[j] * cs[j];
    }
    if (af) {
      const T* __restrict w = a.wcf + j0;
      for (int64_t j = 0; j < n; ++j) af[j] += w[j] * cs[j];
    }
  }
  if (ai) act_inplace(ai, n, s.gate_tanh);
  if (af) act_inplace(af, n, s.gate_tanh);
  if (s.cand_tanh) act_inplace(ag, n, true);
  // c_t = f c_{t-1} + i g
  if (s.coupled) {
    for (int64_t j = 0; j < n; ++j) {
      const T c = (T(1) - ai[j]) * cs[j] + ai[j] * ag[j];
      cs[j] = c;
      co[j] = c;
    }
  } else if (ai && af) {
    for (int64_t j = 0; j < n; ++j) {
      const T c = af[j] * cs[j] + ai[j] * ag[j];
      cs[j] = c;
      co[j] = c;
    }
  } else if (af) {  // no input gate: i = 1
    for (int64_t j = 0; j < n; ++j) {
      const T c = af[j] * cs[j] + ag[j];
      cs[j] = c;
      co[j] = c;
    }
  } else if (ai) {  // no forget gate: f = 1
    for (int64_t j = 0; j < n; ++j) {
      const T c = cs[j] + ai[j] * ag[j];
      cs[j] = c;
      co[j] = c;
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const T c = cs[j] + ag[j];
      cs[j] = c;
      co[j] = c;
    }
  }
  if (ao) {
    if (s.peep) {
      const T* __restrict w = a.wco + j0;
      for (int64_t j = 0; j < n; ++j) ao[j] += w[j] * co[j];
    }
    act_inplace(ao, n, s.gate_tanh);
  }
  // y = tanh(LN(c_t))
  if (s.ln) {
    double mean, rstd;
    row_moments(co, H, kLnEps, &mean, &rstd);
    T* __restrict xh = a.xhat_c + b * H;
    const T* __restrict gw = a.ln_c_w;
    const T* __restrict gb = a.ln_c_b;
    for (int64_t j = 0; j < H; ++j) {
      const T v = T((double(co[j]) - mean) * rstd);
      xh[j] = v;
      y[j] = v * gw[j] + gb[j];
    }
    a.rstd_c[b] = T(rstd);
  } else {
    std::memcpy(y, co, sizeof(T) * n);
  }
  if (s.out_tanh) act_inplace(y, n, true);
  if (ao) {
    for (int64_t j = 0; j < n; ++j) hr[j] = ao[j] * y[j];
  } else {
    std::memcpy(hr, y, sizeof(T) * n);
  }
  if (a.h_state) std::memcpy(a.h_state + b * a.P + j0, hr, sizeof(T) * n);
}

// ----------------------------------------------------------------------- backward step

template <typename T>
struct BwdStep {
  Spec s;
  int64_t B, H, P, GH;
  const T* acts;     // (B, GH) at t
  const T* c_prev;   // (B, H)
  const T* y;        // (B, H)
  const T *xhat_c, *rstd_c, *ln_c_w;
  const T *xhat_hh, *rstd_hh, *ln_hh_w;
  const T* dh_in;    // (B, H) gradient wrt h_t (no projection: the carry), row stride dh_ld
  int64_t dh_ld;
  const T* dout;     // (B, P) gradient of out[t] (no projection only; else folded in)
  T* dh_zero;        // carry rows (stride dh_ld) to zero on real rows (beta = 1 GEMM), or null
  T* dc;             // (B, H) carry: dc_t in, dc_{t-1} out
  T* dG;             // (B, GH) d pre-activations at t
  T* dHW;            // (B, GH) d (h_{t-1} W_hh^T) at t (layer norm only)
  T* dcn;            // (B, H) d LN_c output at t (layer norm only)
  T* tmp;            // (B, H) scratch
  T* tmp2;           // (B, H) scratch
  const T *wci, *wcf, *wco;
  const int64_t* len;
  int64_t t;
};

template <typename T>
GL_CLONES void bwd_rows(const BwdStep<T>& a, int64_t b, int64_t j0, int64_t j1) {
  const Spec& s = a.s;
  const int64_t H = a.H, GH = a.GH, n = j1 - j0;
  T* __restrict D = a.dG + b * GH;
  const bool real = a.len == nullptr || a.t < a.len[b];
  if (!real) {
    for (int k = 0; k < s.G; ++k) std::memset(D + k * H + j0, 0, sizeof(T) * n);
    if (s.ln) {
      for (int k = 0; k < s.G; ++k) std::memset(a.dHW + b * GH + k * H + j0, 0, sizeof(T) * n);
      std::memset(a.dcn + b * H + j0, 0, sizeof(T) * n);
    }
    return;
  }
  const T* __restrict A = a.acts + b * GH;
  const T* __restrict ai = s.has_i ? A + s.oi * H + j0 : nullptr;
  const T* __restrict af = s.has_f ? A + s.of * H + j0 : nullptr;
  const T* __restrict ag = A + s.og * H + j0;
  const T* __restrict ao = s.has_o ? A + s.oo * H + j0 : nullptr;
  T* __restrict di = s.has_i ? D + s.oi * H + j0 : nullptr;
  T* __restrict df = s.has_f ? D + s.of * H + j0 : nullptr;
  T* __restrict dg = D + s.og * H + j0;
  T* __restrict do_ = s.has_o ? D + s.oo * H + j0 : nullptr;
  const T* __restrict cp = a.c_prev + b * H + j0;
  const T* __restrict y = a.y + b * H + j0;
  T* __restrict dc = a.dc + b * H + j0;
  T* __restrict t1 = a.tmp + b * H + j0;
  T* __restrict t2 = a.tmp2 + b * H + j0;

  // dh = carry + d out[t]; with lengths the carry rows of real steps are zeroed for the
  // beta = 1 GEMM that then writes dh_{t-1} (padded rows keep carrying theirs)
  const T* __restrict carry = a.dh_in + b * a.dh_ld + j0;
  const T* __restrict dh = carry;
  if (a.dout || a.dh_zero) {
    if (a.dout) {
      const T* __restrict dout = a.dout + b * a.P + j0;
      for (int64_t j = 0; j < n; ++j) t1[j] = carry[j] + dout[j];
    } else {
      std::memcpy(t1, carry, sizeof(T) * n);
    }
    dh = t1;
    if (a.dh_zero) std::memset(a.dh_zero + b * a.dh_ld + j0, 0, sizeof(T) * n);
  }
  // h = o * y: d pre_o and dy
  if (ao) {
    for (int64_t j = 0; j < n; ++j) t2[j] = dh[j] * y[j];
    act_grad(do_, t2, ao, n, s.gate_tanh);
    for (int64_t j = 0; j < n; ++j) t2[j] = dh[j] * ao[j];
  } else {
    std::memcpy(t2, dh, sizeof(T) * n);
  }
  // through tanh: d (LN(c) or c)
  if (s.out_tanh) {
    for (int64_t j = 0; j < n; ++j) t2[j] = t2[j] * (T(1) - y[j] * y[j]);
  }
  if (s.ln) {  // whole rows
    T* __restrict dn = a.dcn + b * H;
    std::memcpy(dn, t2, sizeof(T) * H);
    const T* __restrict gw = a.ln_c_w;
    const T* __restrict xh = a.xhat_c + b * H;
    double m1 = 0, m2 = 0;
    for (int64_t j = 0; j < H; ++j) {
      const double gy = double(t2[j]) * double(gw[j]);
      m1 += gy;
      m2 += gy * double(xh[j]);
    }
    const T mm1 = T(m1 / double(H)), mm2 = T(m2 / double(H)), r = a.rstd_c[b];
    for (int64_t j = 0; j < H; ++j) t2[j] = r * (t2[j] * gw[j] - mm1 - xh[j] * mm2);
  }
  // dc = carry + from the output (+ peephole of o)
  if (ao && s.peep) {
    const T* __restrict w = a.wco + j0;
    for (int64_t j = 0; j < n; ++j) t2[j] = dc[j] + t2[j] + do_[j] * w[j];
  } else {
    for (int64_t j = 0; j < n; ++j) t2[j] = dc[j] + t2[j];
  }
  const T* __restrict dct = t2;
  // gates: c = f c_prev + i g
  T* __restrict tg = t1;  // dh is no longer needed
  if (ai) {
    for (int64_t j = 0; j < n; ++j) dg[j] = dct[j] * ai[j];
  } else {
    std::memcpy(dg, dct, sizeof(T) * n);
  }
  if (s.cand_tanh) {
    for (int64_t j = 0; j < n; ++j) dg[j] = dg[j] * (T(1) - ag[j] * ag[j]);
  }
  if (ai) {
    if (s.coupled) {
      for (int64_t j = 0; j < n; ++j) tg[j] = dct[j] * (ag[j] - cp[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) tg[j] = dct[j] * ag[j];
    }
    act_grad(di, tg, ai, n, s.gate_tanh);
  }
  if (af) {
    for (int64_t j = 0; j < n; ++j) tg[j] = dct[j] * cp[j];
    act_grad(df, tg, af, n, s.gate_tanh);
  }
  // dc_{t-1}
  if (s.coupled) {
    for (int64_t j = 0; j < n; ++j) dc[j] = dct[j] * (T(1) - ai[j]);
  } else if (af) {
    for (int64_t j = 0; j < n; ++j) dc[j] = dct[j] * af[j];
  } else {
    std::memcpy(dc, dct, sizeof(T) * n);
  }
  if (s.peep) {
    if (di) {
      const T* __restrict w = a.wci + j0;
      for (int64_t j = 0; j < n; ++j) dc[j] += di[j] * w[j];
    }
    if (df) {
      const T* __restrict w = a.wcf + j0;
      for (int64_t j = 0; j < n; ++j) dc[j] += df[j] * w[j];
    }
  }
  if (s.ln) {  // d (h_{t-1} W_hh^T) through the recurrent layer norm, whole rows
    const T* __restrict gw = a.ln_hh_w;
    const T* __restrict xh = a.xhat_hh + b * GH;
    T* __restrict dhw = a.dHW + b * GH;
    double m1 = 0, m2 = 0;
    for (int64_t j = 0; j < GH; ++j) {
      const double gy = double(D[j]) * double(gw[j]);
      m1 += gy;
      m2 += gy * double(xh[j]);
    }
    const T mm1 = T(m1 / double(GH)), mm2 = T(m2 / double(GH)), r = a.rstd_hh[b];
    for (int64_t j = 0; j < GH; ++j) dhw[j] = r * (D[j] * gw[j] - mm1 - xh[j] * mm2);
  }
}

// Run `fn(b, j0, j1)` over B rows and column chunks, in parallel when big enough.
template <typename F>
void for_rows(int64_t B, int64_t H, bool whole_rows, const F& fn, bool par = true) {
  const int64_t threads = at::get_num_threads();
  int64_t chunk = H;
  if (!whole_rows && threads > 1 && B < 2 * threads) {
    chunk = (H + 2 * threads - 1) / (2 * threads);
    chunk = std::max<int64_t>(64, (chunk + 15) / 16 * 16);
  }
  const int64_t nchunks = (H + chunk - 1) / chunk;
  const int64_t units = B * nchunks;
  const int64_t work = B * H;
  auto body = [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / nchunks, c = u % nchunks;
      fn(b, c * chunk, std::min(H, (c + 1) * chunk));
    }
  };
  if (!par || threads <= 1 || work < 2048) {
    body(0, units);
  } else {
    at::parallel_for(0, units, 1, body);
  }
}

// Per-step parallelism that backs off when it does not pay. A step split over threads waits
// at its end for the slowest; on a busy machine (other processes on the cores) that wait
// is a scheduler time slice, milliseconds, for microseconds of work. So steps are timed:
// a few run serially to know their cost; a parallel step that takes over twice that plus
// half a millisecond is a stall, and the loop goes serial for a while (doubling each
// time) before trying again.
struct Adaptive {
  bool allowed;
  int64_t serial_left = 2;
  int64_t backoff = 4;
  double t_serial = 0;
  std::chrono::steady_clock::time_point t0;
  bool par = false;

  explicit Adaptive(bool allowed_) : allowed(allowed_) {}

  bool begin() {
    par = allowed && (serial_left <= 0 || !g_adaptive);
    t0 = std::chrono::steady_clock::now();
    return par;
  }
  void end() {
    if (!allowed) return;
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!par) {
      t_serial = t_serial == 0 ? dt : std::min(t_serial, dt);
      --serial_left;
    } else if (dt > 2.0 * t_serial + 5e-4) {  // a stall (a time slice lost), not noise
      serial_left = backoff;
      backoff = std::min<int64_t>(2 * backoff, 1024);
    } else {
      backoff = 4;
    }
  }
};

template <typename T>
const T* ptr_or_null(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

// Parameter order of the `params` lists (None where absent).
enum {
  kWih, kWhh, kBih, kBhh, kWhr, kWci, kWcf, kWco, kLnIhW, kLnIhB, kLnHhW, kLnHhB, kLnCW, kLnCB,
  kNumParams
};

// ----------------------------------------------------------------------- forward driver

// Returns [out (T,B,P), h_n (B,P), c_n (B,H), acts (T,B,GH), c_all (T,B,H), y_all (T,B,H),
//          hr_all (T,B,H) | undef, xw_raw (T*B,GH) | undef, ln_ih_mean, ln_ih_rstd,
//          xhat_hh (T,B,GH), rstd_hh (T,B), xhat_c (T,B,H), rstd_c (T,B)]
// keep: 2 every step of everything (backward needs it), 1 every step of the trace (acts,
// c_all) only, 0 none: buffers not kept hold one step and only states and out mean much.
template <typename T>
std::vector<Tensor> forward_impl(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                                 const std::vector<OptTensor>& p, const OptTensor& lengths,
                                 int64_t flags, int64_t keep) {
  Tick tick_all(kPFwdAll);
  const Spec s(flags);
  const Tensor x = x_.contiguous();
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2);
  const Tensor w_ih = p[kWih]->contiguous();
  const Tensor w_hh = p[kWhh]->contiguous();
  const int64_t GH = w_ih.size(0), H = GH / s.G, P = w_hh.size(1);
  const bool proj = p[kWhr].has_value();
  const auto opts = x.options();
  TORCH_CHECK(h0.size(0) == B && h0.size(1) == P && c0.size(0) == B && c0.size(1) == H,
              "fused_lstm: state shapes do not match");

  // input projection of all steps: one GEMM (+ layer norm), both biases folded in
  Tensor x2 = x.view({T_ * B, I});
  Tensor bias;
  if (p[kBih].has_value()) bias = *p[kBih];
  if (p[kBhh].has_value()) bias = bias.defined() ? bias + *p[kBhh] : *p[kBhh];
  Tensor xw, xw_raw, ln_mean, ln_rstd;
  int64_t xw_ld = GH;
  std::optional<Tick> tick_proj(std::in_place, kPFwdProj);
  if (!s.ln && (g_gemm_mode == 0 || g_gemm_mode == 4) && T_ * B >= 128) {
    // x W_ih^T + b with the packed GEMM (packing W_ih costs about 32 rows of GEMM, so only
    // for enough rows): xw has padded rows (xw_ld >= GH)
    WeightGemm<T> g_ih(w_ih, T_ * B, /*nt=*/true, /*reuse=*/1000);
    xw_ld = g_ih.ldc();
    xw = at::empty({T_ * B, xw_ld}, opts);
    Tensor bp;
    if (bias.defined()) bp = at::constant_pad_nd(bias, {0, xw_ld - GH}, 0).contiguous();
    big_gemm<T>(T_ * B, I, GH, x.data_ptr<T>(), I, 1, g_ih.packed.template data_ptr<T>(),
                xw.data_ptr<T>(), xw_ld, bp.defined() ? bp.data_ptr<T>() : nullptr);
  } else if (!s.ln && (g_gemm_mode == 0 || g_gemm_mode == 5) && T_ * B <= 4) {
    xw = at::empty({T_ * B, GH}, opts);
    if (bias.defined()) bias = bias.contiguous();
    gemv_nt<T>(T_ * B, I, GH, x.data_ptr<T>(), I, w_ih.data_ptr<T>(), xw.data_ptr<T>(), GH, false,
               bias.defined() ? bias.data_ptr<T>() : nullptr);
  } else if (s.ln) {
    if ((g_gemm_mode == 0 || g_gemm_mode == 4) && T_ * B >= 128 && GH % kPanel<T> == 0) {
      WeightGemm<T> g_ih(w_ih, T_ * B, /*nt=*/true, /*reuse=*/1000);
      xw_raw = at::empty({T_ * B, GH}, opts);
      big_gemm<T>(T_ * B, I, GH, x.data_ptr<T>(), I, 1, g_ih.packed.template data_ptr<T>(),
                  xw_raw.data_ptr<T>(), GH, nullptr);
    } else {
      xw_raw = at::mm(x2, w_ih.t());
    }
    auto r = at::native_layer_norm(xw_raw, {GH}, p[kLnIhW], p[kLnIhB], kLnEps);
    xw = std::get<0>(r);
    ln_mean = std::get<1>(r);
    ln_rstd = std::get<2>(r);
    if (bias.defined()) xw.add_(bias);
  } else if (bias.defined()) {
    xw = at::addmm(bias, x2, w_ih.t());
  } else {
    xw = at::mm(x2, w_ih.t());
  }
  tick_proj.reset();

  const int64_t TK = keep >= 1 ? T_ : 1;  // the trace: acts, c_all
  const int64_t TKB = keep >= 2 ? T_ : 1;  // for backward only
  Tensor out = at::empty({T_, B, P}, opts);
  Tensor h = h0.contiguous().clone();
  Tensor c = c0.contiguous().clone();
  // The gate activations overwrite the input projection in place (each step reads its
  // row of xw, then writes the activations there): one (T, B, GH) buffer less, unless xw
  // has padded rows.
  const bool acts_in_xw = xw_ld == GH;
  Tensor acts = acts_in_xw ? xw.view({T_, B, GH}) : at::empty({TK, B, GH}, opts);
  Tensor c_all = at::empty({TK, B, H}, opts);
  Tensor y_all = at::empty({TKB, B, H}, opts);
  Tensor hr_all = proj ? at::empty({TKB, B, H}, opts) : Tensor();
  Tensor xhat_hh, rstd_hh, xhat_c, rstd_c;
  if (s.ln) {
    xhat_hh = at::empty({TKB, B, GH}, opts);
    rstd_hh = at::empty({TKB, B}, opts);
    xhat_c = at::empty({TKB, B, H}, opts);
    rstd_c = at::empty({TKB, B}, opts);
  }
  Tensor w_hr = proj ? p[kWhr]->contiguous() : Tensor();

  Tensor len_c;
  const int64_t* len = nullptr;
  if (lengths.has_value()) {
    len_c = lengths->to(at::kLong).contiguous();
    len = len_c.data_ptr<int64_t>();
  }

  WeightGemm<T> g_hh(w_hh, B, /*nt=*/true, T_, s.G);
  std::optional<WeightGemm<T>> g_hr;
  if (proj) g_hr.emplace(w_hr, B, /*nt=*/true, T_);
  Tensor hw = at::empty({B, g_hh.ldc()}, opts);
  Tensor hp = proj ? at::empty({B, g_hr->ldc()}, opts) : Tensor();
  const int64_t hp_ld = proj ? g_hr->ldc() : 0;

  // The fused step: each task computes the gate columns of a block of hidden units and
  // runs the pointwise pass on them at once (the small GEMM only; layer norm needs whole
  // rows of h W_hh^T first).
  const bool fused_step = g_hh.own() && !s.ln && g_fused_step;
  const int64_t PW = WeightGemm<T>::PW;
  const int64_t threads = at::get_num_threads();
  const bool par_step = threads > 1 && B * GH * P >= (1 << 17) && H > PW;
  // one block of hidden units per thread: long pointwise loops, one task each
  int64_t JB = par_step ? (H + threads - 1) / threads : H;
  JB = std::max<int64_t>((JB + PW - 1) / PW * PW, B < 4 ? std::min<int64_t>(4 * PW, H) : PW);
  const int64_t nblk = (H + JB - 1) / JB;

  FwdStep<T> a;
  a.s = s;
  a.B = B, a.H = H, a.P = P, a.GH = GH;
  a.hw = hw.data_ptr<T>();
  a.hw_ld = g_hh.ldc();
  a.hw_gs = g_hh.col(1);
  a.ln_hh_w = ptr_or_null<T>(p[kLnHhW]);
  a.ln_hh_b = ptr_or_null<T>(p[kLnHhB]);
  a.ln_c_w = ptr_or_null<T>(p[kLnCW]);
  a.ln_c_b = ptr_or_null<T>(p[kLnCB]);
  a.c = c.data_ptr<T>();
  a.wci = ptr_or_null<T>(p[kWci]);
  a.wcf = ptr_or_null<T>(p[kWcf]);
  a.wco = ptr_or_null<T>(p[kWco]);
  a.len = len;
  // h ping-pongs between two buffers: the step's GEMM reads h_{t-1} from one while the
  // pointwise pass (of other hidden units, in parallel) writes h_t into the other
  Tensor h2 = at::empty_like(h);
  T* hptr = h.data_ptr<T>();
  T* hnext = h2.data_ptr<T>();
  T *hptr_ = hptr, *hnext_ = hnext;  // this step's, for proj_copy
  const T* xw_p = xw.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  T* out_p_ = out_p;

  // With layer norm or a projection (whole rows needed), the batch rows are split instead:
  // a task runs the GEMM, the pointwise pass and the projection of its own rows.
  const bool row_step = !fused_step && g_fused_step && g_hh.own() && (!proj || g_hr->own()) &&
                        threads > 1 && B >= 2 * threads;
  const int64_t RB = row_step ? (B + threads - 1) / threads : B;  // rows per task
  const int64_t nrb = (B + RB - 1) / RB;
  // h_t of rows [b0, b1) from the projection's output: out and the state (padded rows
  // carry h_{t-1})
  auto proj_copy = [&](int64_t t, int64_t b0, int64_t b1) {
    const T* src = hp.data_ptr<T>();
    T* dst = out_p_ + t * B * P;
    for (int64_t b = b0; b < b1; ++b) {
      if (len == nullptr || t < len[b]) {
        std::memcpy(dst + b * P, src + b * hp_ld, sizeof(T) * P);
        std::memcpy(hnext_ + b * P, src + b * hp_ld, sizeof(T) * P);
      } else {
        std::memset(dst + b * P, 0, sizeof(T) * P);
        std::memcpy(hnext_ + b * P, hptr_ + b * P, sizeof(T) * P);
      }
    }
  };

  Adaptive adapt(threads > 1 && B * GH * P >= (1 << 17));
  for (int64_t t = 0; t < T_; ++t) {
    const int64_t tk = keep >= 1 ? t : 0, tkb = keep >= 2 ? t : 0;
    const bool par = adapt.begin();
    hptr_ = hptr;
    hnext_ = hnext;
    if (!fused_step && !row_step) {
      Tick tk_(kPFwdGemm);
      g_hh.run(hptr, P, T(0), hw.data_ptr<T>(), g_hh.ldc(), par);
    }
    a.t = t;
    a.xw = xw_p + t * B * xw_ld;
    a.xw_ld = xw_ld;
    a.acts = acts.data_ptr<T>() + (acts_in_xw ? t : tk) * B * GH;
    a.c_out = c_all.data_ptr<T>() + tk * B * H;
    a.y = y_all.data_ptr<T>() + tkb * B * H;
    if (s.ln) {
      a.xhat_hh = xhat_hh.data_ptr<T>() + tkb * B * GH;
      a.rstd_hh = rstd_hh.data_ptr<T>() + tkb * B;
      a.xhat_c = xhat_c.data_ptr<T>() + tkb * B * H;
      a.rstd_c = rstd_c.data_ptr<T>() + tkb * B;
    }
    if (proj) {
      a.hr = hr_all.data_ptr<T>() + tkb * B * H;
      a.hr_ld = H;
      a.h_state = nullptr;
    } else {
      a.hr = out_p + t * B * P;
      a.hr_ld = P;
      a.h_state = hnext;
      a.h_prev = hptr;
    }
    if (fused_step) {
      Tick tk_(kPFwdPoint);
      auto body = [&](int64_t k0, int64_t k1) {
        for (int64_t q = k0; q < k1; ++q) {
          const int64_t j0 = q * JB, j1 = std::min(H, j0 + JB);
          const int64_t jp1 = std::min(g_hh.Hgp, j0 + JB);
          for (int g = 0; g < s.G; ++g)
            g_hh.run_cols(hptr, P, false, hw.data_ptr<T>(), g_hh.ldc(), g_hh.col(g) + j0,
                          g_hh.col(g) + jp1);
          for (int64_t b = 0; b < B; ++b) fwd_rows<T>(a, b, j0, j1);
        }
      };
      if (par && par_step && nblk > 1) {
        at::parallel_for(0, nblk, 1, body);
      } else {
        body(0, nblk);
      }
    } else if (row_step) {
      Tick tk_(kPFwdPoint);
      auto body = [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b0 = r * RB, b1 = std::min(B, b0 + RB);
          gemm_block<T>(b0, b1, P, hptr, P, 1, g_hh.packed.template data_ptr<T>(),
                        hw.data_ptr<T>(), g_hh.ldc(), 0, g_hh.ldc(), false, nullptr, nullptr);
          for (int64_t b = b0; b < b1; ++b) fwd_rows<T>(a, b, 0, H);
          if (proj) {
            gemm_block<T>(b0, b1, H, a.hr, a.hr_ld, 1, g_hr->packed.template data_ptr<T>(),
                          hp.data_ptr<T>(), hp_ld, 0, hp_ld, false, nullptr, nullptr);
            proj_copy(t, b0, b1);
          }
        }
      };
      if (par) {
        at::parallel_for(0, nrb, 1, body);
      } else {
        body(0, nrb);
      }
    } else {
      Tick tk_(kPFwdPoint);
      for_rows(
          B, H, s.ln, [&](int64_t b, int64_t j0, int64_t j1) { fwd_rows<T>(a, b, j0, j1); }, par);
    }
    if (proj && !row_step) {
      g_hr->run(a.hr, H, T(0), hp.data_ptr<T>(), hp_ld, par);
      proj_copy(t, 0, B);
    }
    std::swap(hptr, hnext);
    adapt.end();
  }
  if (hptr != h.data_ptr<T>()) h = h2;
  return {out, h, c, acts, c_all, y_all, hr_all, xw_raw, ln_mean, ln_rstd,
          xhat_hh, rstd_hh, xhat_c, rstd_c};
}

// ----------------------------------------------------------------------- backward driver

// Column sums out[j] = sum_r a[r, j] * b[r, j] (b == nullptr: just a), without the (R, C)
// temporary of ATen's (a * b).sum(0); double accumulators, parallel over column blocks.
template <typename T>
GL_CLONES void col_dot_block(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t R,
                             int64_t j0, int64_t j1, double* acc) {
  const int64_t n = j1 - j0;
  for (int64_t j = 0; j < n; ++j) acc[j] = 0;
  for (int64_t r = 0; r < R; ++r) {
    const T* __restrict ar = a + r * lda + j0;
    if (b) {
      const T* __restrict br = b + r * ldb + j0;
      for (int64_t j = 0; j < n; ++j) acc[j] += double(ar[j]) * double(br[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) acc[j] += double(ar[j]);
    }
  }
}

template <typename T>
void col_dot(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t R, int64_t C, T* out,
             bool add) {
  constexpr int64_t CB = 256;
  const int64_t tasks = (C + CB - 1) / CB;
  const int64_t grain = R * C >= (1 << 16) ? 1 : tasks;  // small: no parallel region
  at::parallel_for(0, tasks, grain, [&](int64_t q0, int64_t q1) {
    double acc[CB];
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t j0 = q * CB, j1 = std::min(C, j0 + CB);
      col_dot_block<T>(a, lda, b, ldb, R, j0, j1, acc);
      for (int64_t j = j0; j < j1; ++j) out[j] = T(add ? double(out[j]) + acc[j - j0] : acc[j - j0]);
    }
  });
}

// dh[b, j0:j1] += sum over the nblk partial products (each (B, ld)).
template <typename T>
void add_partials(const T* part, int64_t nblk, int64_t B, int64_t ld, T* dh, int64_t j0,
                  int64_t j1) {
  for (int64_t r = 0; r < nblk; ++r)
    for (int64_t b = 0; b < B; ++b) {
      const T* src = part + (r * B + b) * ld;
      T* dst = dh + b * ld;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
}

// saved: the forward's list. Returns [dx | undef, dh0, dc0, d params in kNumParams order
// (undef where absent)].
template <typename T>
std::vector<Tensor> backward_impl(const OptTensor& dout_, const OptTensor& dhn,
                                  const OptTensor& dcn_, const Tensor& x_, const Tensor& h0,
                                  const Tensor& c0, const std::vector<OptTensor>& p,
                                  const OptTensor& lengths, int64_t flags,
                                  const std::vector<Tensor>& saved, bool need_dx) {
  Tick tick_all(kPBwdAll);
  const Spec s(flags);
  const Tensor x = x_.contiguous();
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2);
  const Tensor w_ih = p[kWih]->contiguous();
  const Tensor w_hh = p[kWhh]->contiguous();
  const int64_t GH = w_ih.size(0), H = GH / s.G, P = w_hh.size(1);
  const bool proj = p[kWhr].has_value();
  const auto opts = x.options();
  const Tensor &out = saved[0], &acts = saved[3], &c_all = saved[4], &y_all = saved[5],
               &hr_all = saved[6], &xw_raw = saved[7], &ln_mean = saved[8],
               &ln_rstd = saved[9], &xhat_hh = saved[10], &rstd_hh = saved[11],
               &xhat_c = saved[12], &rstd_c = saved[13];

  Tensor len_c;
  const int64_t* len = nullptr;
  if (lengths.has_value()) {
    len_c = lengths->to(at::kLong).contiguous();
    len = len_c.data_ptr<int64_t>();
  }
  Tensor dout;
  if (dout_.has_value() && dout_->defined()) dout = dout_->contiguous();
  Tensor dc = (dcn_.has_value() && dcn_->defined()) ? dcn_->contiguous().clone()
                                                     : at::zeros({B, H}, opts);
  Tensor dG = at::empty({T_, B, GH}, opts);
  Tensor dHW = s.ln ? at::empty({T_, B, GH}, opts) : dG;
  Tensor dCN = s.ln ? at::empty({T_, B, H}, opts) : Tensor();
  Tensor dH_all = proj ? at::empty({T_, B, P}, opts) : Tensor();
  Tensor tmp = at::empty({B, H}, opts), tmp2 = at::empty({B, H}, opts);
  Tensor w_hr = proj ? p[kWhr]->contiguous() : Tensor();

  std::optional<WeightGemm<T>> g_hh_;  // released after the loop (peak memory)
  g_hh_.emplace(w_hh, B, /*nt=*/false, T_);
  WeightGemm<T>& g_hh = *g_hh_;
  std::optional<WeightGemm<T>> g_hr;
  if (proj) g_hr.emplace(w_hr, B, /*nt=*/false, T_);
  // the carry dh (gradient wrt h_{t-1}) is the GEMM's output: row stride dld (padded)
  const int64_t dld = g_hh.ldc();
  Tensor dh = at::zeros({B, dld}, opts);
  if (dhn.has_value() && dhn->defined()) dh.narrow(1, 0, P).copy_(*dhn);
  Tensor dhr = proj ? at::empty({B, g_hr->ldc()}, opts) : Tensor();

  BwdStep<T> a;
  a.s = s;
  a.B = B, a.H = H, a.P = P, a.GH = GH;
  a.ln_c_w = ptr_or_null<T>(p[kLnCW]);
  a.ln_hh_w = ptr_or_null<T>(p[kLnHhW]);
  a.dc = dc.data_ptr<T>();
  a.tmp = tmp.data_ptr<T>();
  a.tmp2 = tmp2.data_ptr<T>();
  a.wci = ptr_or_null<T>(p[kWci]);
  a.wcf = ptr_or_null<T>(p[kWcf]);
  a.wco = ptr_or_null<T>(p[kWco]);
  a.len = len;
  T* dhp = dh.data_ptr<T>();
  const T* dout_p = dout.defined() ? dout.data_ptr<T>() : nullptr;
  const T beta = len ? T(1) : T(0);

  // The fused step (small GEMM, no projection, no layer norm): hidden units split in
  // blocks, one per thread; each block's dG columns times its rows of W_hh gives a partial
  // dh_{t-1}, summed by the blocks at the start of the next step, so a step needs one
  // parallel region (partials ping-pong between two buffers).
  const bool fused_bstep = g_hh.own() && !proj && !s.ln && g_fused_step;
  const int64_t PW = WeightGemm<T>::PW;
  const int64_t threads = at::get_num_threads();
  const bool par_bstep = threads > 1 && B * GH * P >= (1 << 17) && H > PW;
  int64_t JB = par_bstep ? (H + threads - 1) / threads : H;
  JB = (JB + PW - 1) / PW * PW;
  const int64_t nblk = (H + JB - 1) / JB;
  Tensor part = fused_bstep ? at::empty({2, nblk, B, dld}, opts) : Tensor();

  Adaptive adapt(threads > 1 && B * GH * P >= (1 << 17));
  // Layer norm or projection: the batch rows are split over tasks (see forward_impl).
  const bool row_bstep = !fused_bstep && g_fused_step && g_hh.own() &&
                         (!proj || g_hr->own()) && threads > 1 && B >= 2 * threads;
  const int64_t RB = row_bstep ? (B + threads - 1) / threads : B;
  const int64_t nrb = (B + RB - 1) / RB;
  // the projected case: dH_all[t] rows = carry + d out[t] (zero on padded rows)
  auto dh_total = [&](int64_t t, int64_t b0, int64_t b1) {
    T* dht = dH_all.data_ptr<T>() + t * B * P;
    for (int64_t b = b0; b < b1; ++b) {
      if (len == nullptr || t < len[b]) {
        for (int64_t j = 0; j < P; ++j)
          dht[b * P + j] = dhp[b * dld + j] + (dout_p ? dout_p[(t * B + b) * P + j] : T(0));
        if (len) std::memset(dhp + b * dld, 0, sizeof(T) * P);
      } else {
        std::memset(dht + b * P, 0, sizeof(T) * P);
      }
    }
  };
  for (int64_t t = T_ - 1; t >= 0; --t) {
    const bool par = adapt.begin();
    a.t = t;
    a.acts = acts.data_ptr<T>() + t * B * GH;
    a.c_prev = t > 0 ? c_all.data_ptr<T>() + (t - 1) * B * H : c0.data_ptr<T>();
    a.y = y_all.data_ptr<T>() + t * B * H;
    a.dG = dG.data_ptr<T>() + t * B * GH;
    if (s.ln) {
      a.xhat_c = xhat_c.data_ptr<T>() + t * B * H;
      a.rstd_c = rstd_c.data_ptr<T>() + t * B;
      a.xhat_hh = xhat_hh.data_ptr<T>() + t * B * GH;
      a.rstd_hh = rstd_hh.data_ptr<T>() + t * B;
      a.dHW = dHW.data_ptr<T>() + t * B * GH;
      a.dcn = dCN.data_ptr<T>() + t * B * H;
    }
    if (proj) {
      // total gradient wrt h_t (projected), kept for dW_hr; then through W_hr
      if (!row_bstep) {
        dh_total(t, 0, B);
        g_hr->run(dH_all.data_ptr<T>() + t * B * P, P, T(0), dhr.data_ptr<T>(), g_hr->ldc(), par);
      }
      a.dh_in = dhr.data_ptr<T>();
      a.dh_ld = g_hr->ldc();
      a.dout = nullptr;
      a.dh_zero = nullptr;
    } else {
      a.dh_in = dhp;
      a.dh_ld = dld;
      a.dout = dout_p ? dout_p + t * B * P : nullptr;
      a.dh_zero = len ? dhp : nullptr;
    }
    if (fused_bstep) {
      // One task per block of hidden units: add the partial products of the step before
      // into the carry (its own columns), the pointwise pass, then this block's partial
      // product dG[:, its gate rows] W_hh[its gate rows, :] (all columns).
      Tick tk_(kPBwdPoint);
      a.dh_zero = dhp;  // the carry of real rows restarts from the partial products
      T* part_now = part.data_ptr<T>() + (t & 1) * nblk * B * dld;
      const T* part_prev = part.data_ptr<T>() + ((t + 1) & 1) * nblk * B * dld;
      const bool first = t == T_ - 1;
      const T* Wpk = g_hh.packed.template data_ptr<T>();
      auto body = [&](int64_t k0, int64_t k1) {
        for (int64_t q = k0; q < k1; ++q) {
          const int64_t j0 = q * JB, j1 = std::min(H, j0 + JB);
          if (!first) add_partials(part_prev, nblk, B, dld, dhp, j0, j1);
          for (int64_t b = 0; b < B; ++b) bwd_rows<T>(a, b, j0, j1);
          const T* dGt = dG.data_ptr<T>() + t * B * GH;
          for (int g = 0; g < s.G; ++g)
            gemm_block<T>(0, B, j1 - j0, dGt + g * H + j0, GH, 1, Wpk + (g * H + j0) * PW,
                          part_now + q * B * dld, dld, 0, dld, g > 0, nullptr, nullptr,
                          GH * PW);
        }
      };
      if (par && par_bstep) {
        at::parallel_for(0, nblk, 1, body);
      } else {
        body(0, nblk);
      }
      adapt.end();
      continue;
    }
    if (row_bstep) {
      Tick tk_(kPBwdPoint);
      auto body = [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b0 = r * RB, b1 = std::min(B, b0 + RB);
          if (proj) {
            dh_total(t, b0, b1);
            gemm_block<T>(b0, b1, P, dH_all.data_ptr<T>() + t * B * P, P, 1,
                          g_hr->packed.template data_ptr<T>(), dhr.data_ptr<T>(), g_hr->ldc(),
                          0, g_hr->ldc(), false, nullptr, nullptr);
          }
          for (int64_t b = b0; b < b1; ++b) bwd_rows<T>(a, b, 0, H);
          gemm_block<T>(b0, b1, GH, dHW.data_ptr<T>() + t * B * GH, GH, 1,
                        g_hh.packed.template data_ptr<T>(), dhp, dld, 0, dld, beta != T(0),
                        nullptr, nullptr);
        }
      };
      if (par) {
        at::parallel_for(0, nrb, 1, body);
      } else {
        body(0, nrb);
      }
      adapt.end();
      continue;
    }
    {
      Tick tk_(kPBwdPoint);
      for_rows(
          B, H, s.ln, [&](int64_t b, int64_t j0, int64_t j1) { bwd_rows<T>(a, b, j0, j1); }, par);
    }
    {
      Tick tk_(kPBwdGemm);
      g_hh.run(dHW.data_ptr<T>() + t * B * GH, GH, beta, dhp, dld, par);
    }
    adapt.end();
  }
  if (fused_bstep) add_partials(part.data_ptr<T>(), nblk, B, dld, dhp, 0, H);
  Tick tick_after(kPBwdAfter);
  g_hh_.reset();
  g_hr.reset();
  tmp = tmp2 = dhr = Tensor();

  // weight gradients as large GEMMs / reductions over all steps. Each is a sum over steps
  // of (a gradient, zero on padded rows) times (an activation); the activations of padded
  // rows, and the states that feed a padded step, are zeroed first: a NaN or inf carried
  // through padding would make 0 * inf = NaN, which a PackedSequence never computes.
  Tensor padded, padded_next;  // (T, B, 1): step t is padding; step t + 1 is
  if (len && len_c.min().item<int64_t>() < T_) {
    const Tensor steps = at::arange(T_, len_c.options()).unsqueeze(1);  // (T, 1)
    padded = (steps >= len_c.unsqueeze(0)).unsqueeze(2);
    padded_next = (steps + 1 >= len_c.unsqueeze(0)).unsqueeze(2);
  }
  auto zero_rows = [&](const Tensor& t, const Tensor& m, bool used) {
    return used && m.defined() ? t.masked_fill(m, 0).contiguous() : t;
  };
  const Tensor h_feed = zero_rows(out, padded_next, true);  // h_t as h_{t-1} of step t + 1
  const Tensor c_feed = zero_rows(c_all, padded_next, s.peep);  // c_t as c_{t-1} of step t + 1
  const Tensor xhat_hh_r = zero_rows(xhat_hh, padded, s.ln);
  const Tensor xhat_c_r = zero_rows(xhat_c, padded, s.ln);
  const Tensor hr_r = zero_rows(hr_all, padded, proj);
  std::vector<Tensor> g(3 + kNumParams);
  g[1] = dld == P ? dh : dh.narrow(1, 0, P).contiguous();
  g[2] = dc;
  dh = Tensor();
  const int64_t TB = T_ * B;
  auto vec = [&](int64_t n) { return at::empty({n}, opts); };
  // reductions of dG (biases, peepholes, recurrent layer norm) before dG may be released
  if (p[kBih].has_value() || p[kBhh].has_value() || s.ln) {
    Tensor dsum = vec(GH);
    col_dot<T>(dG.data_ptr<T>(), GH, nullptr, 0, TB, GH, dsum.data_ptr<T>(), false);
    if (p[kBih].has_value()) g[3 + kBih] = dsum;
    if (p[kBhh].has_value()) g[3 + kBhh] = p[kBih].has_value() ? dsum.clone() : dsum;
    if (s.ln) g[3 + kLnHhB] = p[kBih].has_value() || p[kBhh].has_value() ? dsum.clone() : dsum;
  }
  if (s.peep) {
    const T* dGp = dG.data_ptr<T>();
    const T* cp = c_all.data_ptr<T>();
    const T* cf = c_feed.data_ptr<T>();
    auto prev_sum = [&](int off) {  // sum_t dG_gate[t] * c_{t-1}, c_{-1} = c0
      Tensor r = vec(H);
      col_dot<T>(dGp + off * H, GH, c0.data_ptr<T>(), H, B, H, r.data_ptr<T>(), false);
      if (T_ > 1)
        col_dot<T>(dGp + B * GH + off * H, GH, cf, H, (T_ - 1) * B, H, r.data_ptr<T>(), true);
      return r;
    };
    if (s.has_i) g[3 + kWci] = prev_sum(s.oi);
    if (s.has_f) g[3 + kWcf] = prev_sum(s.of);
    if (s.has_o) {
      Tensor r = vec(H);
      col_dot<T>(dGp + s.oo * H, GH, cp, H, TB, H, r.data_ptr<T>(), false);
      g[3 + kWco] = r;
    }
  }
  if (s.ln) {
    Tensor r = vec(GH);
    col_dot<T>(dG.data_ptr<T>(), GH, xhat_hh_r.data_ptr<T>(), GH, TB, GH, r.data_ptr<T>(),
               false);
    g[3 + kLnHhW] = r;
    Tensor rc = vec(H), rb = vec(H);
    col_dot<T>(dCN.data_ptr<T>(), H, xhat_c_r.data_ptr<T>(), H, TB, H, rc.data_ptr<T>(), false);
    col_dot<T>(dCN.data_ptr<T>(), H, nullptr, 0, TB, H, rb.data_ptr<T>(), false);
    g[3 + kLnCW] = rc;
    g[3 + kLnCB] = rb;
    dCN = Tensor();
  }
  if (proj) g[3 + kWhr] = at::mm(dH_all.view({TB, P}).t(), hr_r.view({TB, H}));
  dH_all = Tensor();

  const bool own = g_gemm_mode == 0 || g_gemm_mode == 4;
  auto pad = [&](int64_t n) { return (n + PW - 1) / PW * PW; };
  const int64_t Ip = pad(I), Pp = pad(P);
  // dW_hh = sum_t dHW_t^T h_{t-1}, h_{-1} = h0, h_{t-1} = out[t-1] on real steps
  if (own) {
    Tensor hp = at::empty({Pp * TB}, opts);
    pack_rows<T>(h0.data_ptr<T>(), P, B, 0, TB, P, hp.data_ptr<T>());
    if (T_ > 1) pack_rows<T>(h_feed.data_ptr<T>(), P, TB - B, B, TB, P, hp.data_ptr<T>());
    Tensor dw = at::empty({GH, Pp}, opts);
    big_gemm<T>(GH, TB, P, dHW.data_ptr<T>(), 1, GH, hp.data_ptr<T>(), dw.data_ptr<T>(), Pp,
                nullptr);
    g[3 + kWhh] = dw.narrow(1, 0, P);
  } else {
    Tensor dwhh = at::mm(dHW.select(0, 0).t(), h0.contiguous());
    if (T_ > 1)
      dwhh.addmm_(dHW.narrow(0, 1, T_ - 1).reshape({(T_ - 1) * B, GH}).t(),
                  h_feed.narrow(0, 0, T_ - 1).reshape({(T_ - 1) * B, P}));
    g[3 + kWhh] = dwhh;
  }
  dHW = Tensor();  // (layer norm: its own buffer, released here)

  // the input side: through the input layer norm, then dx and dW_ih
  Tensor dxw = dG.view({TB, GH});
  if (s.ln) {
    auto r = at::native_layer_norm_backward(dxw, xw_raw, {GH}, ln_mean, ln_rstd, p[kLnIhW],
                                            p[kLnIhB], {true, true, true});
    dG = Tensor();
    dxw = std::get<0>(r).contiguous();
    g[3 + kLnIhW] = std::get<1>(r);
    g[3 + kLnIhB] = std::get<2>(r);
  }
  const T* dxw_p = dxw.data_ptr<T>();
  if (need_dx && own && TB >= 128) {  // dx = dxw W_ih (packing W_ih pays off for enough rows)
    Tensor wp = at::empty({Ip * GH}, opts);
    pack_rows<T>(w_ih.data_ptr<T>(), I, GH, 0, GH, I, wp.data_ptr<T>());
    Tensor dx = at::empty({TB, Ip}, opts);
    big_gemm<T>(TB, GH, I, dxw_p, GH, 1, wp.data_ptr<T>(), dx.data_ptr<T>(), Ip, nullptr);
    g[0] = dx.view({T_, B, Ip}).narrow(2, 0, I);
  } else if (need_dx) {
    g[0] = at::mm(dxw, w_ih).view({T_, B, I});
  }
  if (own) {  // dW_ih = dxw^T x (a sum of TB outer products)
    Tensor xp = at::empty({Ip * TB}, opts);
    pack_rows<T>(x.data_ptr<T>(), I, TB, 0, TB, I, xp.data_ptr<T>());
    Tensor dw = at::empty({GH, Ip}, opts);
    big_gemm<T>(GH, TB, I, dxw_p, 1, GH, xp.data_ptr<T>(), dw.data_ptr<T>(), Ip, nullptr);
    g[3 + kWih] = dw.narrow(1, 0, I);
  } else {
    g[3 + kWih] = at::mm(dxw.t(), x.view({TB, I}));
  }
  return g;
}

// ----------------------------------------------------------------------- argument checks
// The last line of defence: gatelab.nn.backends._checks validates every argument before the
// Python backend calls these functions, but they are reachable directly
// (backends.fused.extension()), and the loops above trust every size they are given. So
// each size, dtype, device and value the raw-pointer loops rely on is checked here again.

const char* const kParamNames[kNumParams] = {
    "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_ci", "weight_cf",
    "weight_co", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
    "ln_c_bias"};

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

struct Dims {
  int64_t T, B, I, H, P, GH;
};

// A tensor the kernels read: defined, on the CPU, with x's dtype and exactly `want` sizes.
void check_tensor(const char* fn, const char* name, const Tensor& t, const Tensor& x,
                  at::IntArrayRef want) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is missing; expected sizes ", want);
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " is on ", t.device(), "; expected the CPU");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), fn, ": ", name, " has dtype ",
              t.scalar_type(), "; expected ", x.scalar_type(), " like x");
  TORCH_CHECK(t.sizes() == want, fn, ": ", name, " has sizes ", t.sizes(), "; expected ", want);
}

Dims check_args(const char* fn, const Tensor& x, const Tensor& h0, const Tensor& c0,
                const std::vector<OptTensor>& p, const OptTensor& lengths, int64_t flags) {
  TORCH_CHECK(flags >= 0 && flags < 512, fn, ": flags ", flags,
              " out of range; expected 0..511 (see Spec, backends.fused.spec_flags)");
  const Spec s(flags);
  TORCH_CHECK(!s.coupled || ((flags & 1) && (flags & 2)), fn, ": flags ", flags,
              " couple the forget gate to an input gate that is off; expected both on");
  TORCH_CHECK(x.defined(), fn, ": x is undefined");
  TORCH_CHECK(x.device().is_cpu(), fn, ": x is on ", x.device(), "; the kernels run on CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, fn,
              ": x has dtype ", x.scalar_type(), "; the kernels run float32 and float64");
  TORCH_CHECK(x.dim() == 3, fn, ": x must be (T, B, I), got sizes ", x.sizes());
  Dims d{};
  d.T = x.size(0), d.B = x.size(1), d.I = x.size(2);
  TORCH_CHECK(d.T > 0, fn, ": expected sequence length to be larger than 0, got x of sizes ",
              x.sizes());
  TORCH_CHECK(d.B > 0, fn, ": got B=0 sequences (x sizes ", x.sizes(),
              "); the Python backend handles an empty batch, the kernels need B > 0");
  TORCH_CHECK(d.I > 0, fn, ": x has no features, sizes ", x.sizes());
  TORCH_CHECK(int64_t(p.size()) == kNumParams, fn, ": expected ", int(kNumParams),
              " parameters (None where absent), got ", p.size());
  const bool needed[kNumParams] = {
      true,  true,  false, false, false, s.peep && s.has_i, s.peep && s.has_f,
      s.peep && s.has_o, s.ln, s.ln, s.ln, s.ln, s.ln, s.ln};
  for (int k = 0; k < kNumParams; ++k) {
    const bool optional = k == kBih || k == kBhh || k == kWhr;
    TORCH_CHECK(present(p[k]) == needed[k] || (optional && !needed[k]), fn, ": parameter ",
                kParamNames[k], present(p[k]) ? " is given but flags " : " is missing for flags ",
                flags, present(p[k]) ? " have no use for it" : "");
  }
  // H from c0, as the Python checks do, so that a weight of the wrong height is named
  TORCH_CHECK(c0.defined() && c0.dim() == 2 && c0.size(0) == d.B && c0.size(1) > 0, fn,
              ": c0 has sizes ", c0.defined() ? c0.sizes() : at::IntArrayRef{},
              "; expected (B, H) with B=", d.B, " from x and H >= 1");
  d.H = c0.size(1), d.GH = s.G * d.H, d.P = d.H;
  if (present(p[kWhr])) {
    TORCH_CHECK(p[kWhr]->dim() == 2 && p[kWhr]->size(0) > 0, fn, ": weight_hr has sizes ",
                p[kWhr]->sizes(), "; expected (P, H) with P >= 1");
    d.P = p[kWhr]->size(0);
  }
  constexpr int64_t kMax = std::numeric_limits<int>::max();  // BLAS takes int sizes
  TORCH_CHECK(d.T * d.B <= kMax && d.GH <= kMax && d.I <= kMax && d.P <= kMax, fn,
              ": sizes beyond the BLAS's int range: T*B=", d.T * d.B, ", G*H=", d.GH, ", I=", d.I);
  for (int k = 0; k < kNumParams; ++k) {
    if (!present(p[k])) continue;
    std::vector<int64_t> want;
    switch (k) {
      case kWih: want = {d.GH, d.I}; break;
      case kWhh: want = {d.GH, d.P}; break;
      case kWhr: want = {d.P, d.H}; break;
      case kBih: case kBhh: case kLnIhW: case kLnIhB: case kLnHhW: case kLnHhB:
        want = {d.GH}; break;
      default: want = {d.H};  // peepholes, the cell's layer norm
    }
    check_tensor(fn, kParamNames[k], *p[k], x, want);
  }
  check_tensor(fn, "h0", h0, x, {d.B, d.P});
  check_tensor(fn, "c0", c0, x, {d.B, d.H});
  if (lengths.has_value()) {
    const Tensor& len = *lengths;
    TORCH_CHECK(len.defined(), fn, ": lengths is undefined; pass None for full sequences");
    TORCH_CHECK(len.device().is_cpu(), fn, ": lengths is on ", len.device(),
                "; expected the CPU");
    TORCH_CHECK(at::isIntegralType(len.scalar_type(), /*includeBool=*/false), fn,
                ": lengths has dtype ", len.scalar_type(), "; expected an integer dtype");
    TORCH_CHECK(len.dim() == 1 && len.size(0) == d.B, fn, ": lengths has sizes ", len.sizes(),
                "; expected one per sequence, (", d.B, ")");
    const int64_t lo = len.min().item<int64_t>(), hi = len.max().item<int64_t>();
    TORCH_CHECK(lo >= 1 && hi <= d.T, fn, ": lengths holds values in [", lo, ", ", hi,
                "]; expected each in 1..T=", d.T);
  }
  return d;
}

// Steps t >= lengths[b] are padding: zeroed, so that NaN or inf standing there reach no
// output and no gradient (dW_ih = dxw^T x would turn 0 * inf into NaN), as with a
// PackedSequence. A copy of x only when there is padding.
Tensor zero_padding(const Tensor& x, const OptTensor& lengths) {
  if (!lengths.has_value()) return x;
  const Tensor len = lengths->to(at::kLong);
  if (len.min().item<int64_t>() == x.size(0)) return x;
  const Tensor steps = at::arange(x.size(0), len.options());
  const Tensor pad = steps.unsqueeze(1) >= len.unsqueeze(0);  // (T, B)
  return x.masked_fill(pad.unsqueeze(2), 0);
}

std::vector<Tensor> lstm_forward(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                                 std::vector<OptTensor> p, const OptTensor& lengths,
                                 int64_t flags, int64_t keep) {
  check_args("lstm_forward", x_, h0, c0, p, lengths, flags);
  TORCH_CHECK(keep >= 0 && keep <= 2, "lstm_forward: keep=", keep, "; expected 0, 1 or 2");
  at::NoGradGuard no_grad;
  const Tensor x = zero_padding(x_, lengths);
  for (auto& t : p)
    if (t.has_value()) t = t->contiguous();
  if (x.scalar_type() == at::kFloat)
    return forward_impl<float>(x, h0, c0, p, lengths, flags, keep);
  TORCH_CHECK(x.scalar_type() == at::kDouble, "fused_lstm runs float32 and float64, got ",
              x.scalar_type());
  return forward_impl<double>(x, h0, c0, p, lengths, flags, keep);
}

std::vector<Tensor> lstm_backward(const OptTensor& dout, const OptTensor& dhn,
                                  const OptTensor& dcn, const Tensor& x_, const Tensor& h0,
                                  const Tensor& c0, std::vector<OptTensor> p,
                                  const OptTensor& lengths, int64_t flags,
                                  const std::vector<Tensor>& saved, bool need_dx) {
  const char* fn = "lstm_backward";
  const Dims d = check_args(fn, x_, h0, c0, p, lengths, flags);
  const Tensor& x = x_;  // checks below compare dtypes with it
  const Spec s(flags);
  const int64_t T_ = d.T, B = d.B, H = d.H, P = d.P, GH = d.GH;
  if (present(dout)) check_tensor(fn, "d_out", *dout, x, {T_, B, P});
  if (present(dhn)) check_tensor(fn, "d_h_n", *dhn, x, {B, P});
  if (present(dcn)) check_tensor(fn, "d_c_n", *dcn, x, {B, H});
  // saved: lstm_forward's list (keep=2); the loops read every step of what they use
  TORCH_CHECK(saved.size() >= 14, fn, ": saved holds ", saved.size(),
              " tensors; expected lstm_forward's 14");
  auto saved_ok = [&](int k, const char* name, at::IntArrayRef want) {
    check_tensor(fn, name, saved[k], x, want);
    TORCH_CHECK(saved[k].is_contiguous(), fn, ": saved ", name, " is not contiguous");
  };
  saved_ok(0, "out", {T_, B, P});
  saved_ok(3, "acts", {T_, B, GH});
  saved_ok(4, "c_all", {T_, B, H});
  saved_ok(5, "y_all", {T_, B, H});
  if (present(p[kWhr])) saved_ok(6, "hr_all", {T_, B, H});
  if (s.ln) {
    saved_ok(7, "xw_raw", {T_ * B, GH});
    TORCH_CHECK(saved[8].defined() && saved[9].defined() && saved[8].numel() == T_ * B &&
                    saved[9].numel() == T_ * B && saved[8].is_contiguous() &&
                    saved[9].is_contiguous(),
                fn, ": saved layer-norm statistics must hold T*B=", T_ * B, " values each");
    saved_ok(10, "xhat_hh", {T_, B, GH});
    saved_ok(11, "rstd_hh", {T_, B});
    saved_ok(12, "xhat_c", {T_, B, H});
    saved_ok(13, "rstd_c", {T_, B});
  }
  at::NoGradGuard no_grad;
  const Tensor xz = zero_padding(x_, lengths);
  for (auto& t : p)
    if (t.has_value()) t = t->contiguous();
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  if (x.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dhn, dcn, xz, h0c, c0c, p, lengths, flags, saved,
                                need_dx);
  return backward_impl<double>(dout, dhn, dcn, xz, h0c, c0c, p, lengths, flags, saved,
                               need_dx);
}

void set_gemm_mode(int64_t mode, int64_t fused_step, int64_t adaptive) {
  TORCH_CHECK(mode >= 0 && mode <= 5, "gemm mode must be 0..5, got ", mode);
  g_gemm_mode = int(mode);
  g_fused_step = int(fused_step);
  g_adaptive = int(adaptive);
}

// Enable (and reset) or disable the phase timers; returns the seconds summed so far.
std::vector<double> profile(int64_t mode) {
  std::vector<double> r(g_prof, g_prof + kPSlots);
  if (mode)
    for (double& v : g_prof) v = 0;
  g_profile = int(mode);
  return r;
}

// Microseconds per empty at::parallel_for region over `tasks` tasks (thread start-up and
// join cost, which decides when a step is worth splitting).
double bench_parallel(int64_t reps, int64_t tasks) {
  TORCH_CHECK(reps >= 1 && tasks >= 1 && tasks <= (1 << 20), "bench_parallel: reps >= 1 and "
              "tasks in 1..", 1 << 20, " expected, got ", reps, ", ", tasks);
  std::vector<int64_t> sink(tasks, 0);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r)
    at::parallel_for(0, tasks, 1, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) sink[i] += 1;
    });
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
             .count() /
         double(reps);
}

std::string blas_info() {
  const Blas& b = Blas::get();
  std::string s = "sgemm=";
  s += b.sgemm ? "yes" : "no";
  s += " dgemm=";
  s += b.dgemm ? "yes" : "no";
  s += " packed=";
  s += b.pack_size ? "yes" : "no";
  return s;
}

template <typename T>
GL_CLONES void act_span(T* a, int64_t n, bool use_tanh) {
  act_inplace(a, n, use_tanh);
}

// Element-wise activations as the kernels compute them (same clones), for tests of the
// float32 approximations and for timing them.
Tensor activation(const Tensor& x_, const std::string& name) {
  TORCH_CHECK(x_.defined() && x_.device().is_cpu(), "activation: expected a CPU tensor");
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "activation: x has dtype ", x_.scalar_type(), "; expected float32 or float64");
  Tensor x = x_.contiguous().clone();
  const bool use_tanh = name == "tanh";
  TORCH_CHECK(use_tanh || name == "sigmoid", "activation: tanh or sigmoid, got ", name);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "activation", [&] {
    act_span<scalar_t>(x.data_ptr<scalar_t>(), x.numel(), use_tanh);
  });
  return x;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gatelab fused LSTM kernels (CPU)";
  m.def("lstm_forward", &lstm_forward, "one LSTM layer-direction, forward");
  m.def("lstm_backward", &lstm_backward, "one LSTM layer-direction, backward");
  m.def("set_gemm_mode", &set_gemm_mode,
        "GEMM: 0 auto, 1 BLAS, 2 MKL packed, 3 at::mm, 4 small_gemm, 5 gemv; fused_step 0/1",
        py::arg("mode"), py::arg("fused_step") = 1, py::arg("adaptive") = 1);
  m.def("bench_gemm", &bench_gemm, "seconds per recurrent GEMM call (M, K, N, mode, reps, double)");
  m.def("profile", &profile, "phase timers: 1 wall / 2 thread CPU (resets), 0 off; returns seconds per phase");
  m.def("bench_parallel", &bench_parallel, "microseconds per empty parallel region");
  m.def("blas_info", &blas_info, "which BLAS entry points were found");
  m.def("activation", &activation, "the kernels' sigmoid / tanh, element-wise");
}
