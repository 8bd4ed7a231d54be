// gemm_plan.h: which GEMM runs each product (the own kernel or the BLAS), measured once per
// shape on the machine that runs it, cached for the process (issue 16)
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "gemm.h"

namespace {

// The own kernel was tuned on a Zen 4 (AVX-512), where it beat MKL at every product; on a
// Zen 3 (AVX2 only) MKL won the one-row products by 2.5x until the AVX2 tiles were fixed,
// and still wins some shapes by ~1.1x (BENCHMARKS.md, "Zen 3 (AVX2): own GEMM against
// MKL"). A kernel tuned to one CPU must not lose on the next, so
// in the default mode (g_gemm_mode 0) each product kind and shape is measured at first use:
// kGemmProbe calls of each candidate, alternated after kGemmWarm untimed rounds, medians
// compared. The BLAS is taken only when its median is under kBlasMargin x the own kernel's:
// the own kernel fuses the recurrent GEMM with the pointwise pass and allocates no MKL
// buffers, gains a per-product time does not show. The decision is then fixed for that
// kind, shape, dtype and thread count in this process (gemm_plans lists them). The shape
// is what the probe measures: B rows for the recurrent products, a block of kProbeRows
// rows for the large ones (never T*B), so that no sequence length probes again.
//
// Not measured, always the own kernel: batches of kGemvRows rows (B = 1: MKL's sgemm
// allocates ~330 KB per thread on first use, more than a B = 1 step's own buffers, issue 16's
// peak-memory target; nothing is recorded either), and the products the drivers give to
// the unpacked loops (few rows, a weight used once or twice). Forced modes override the
// measurement: g_gemm_mode 4 or 5 the own kernel everywhere, 1, 2 or 3 the BLAS
// (set_gemm_mode).
enum GemmKind {
  kGRecFwd = 0,  // h_{t-1} W^T per step (W_hh, W_hr): M = B rows
  kGRecBwd = 1,  // dG_t W per step (W_hh, W_hr)
  kGProj = 2,    // x W_ih^T over all steps (layer norm's raw projection too)
  kGDx = 3,      // dx = dG W_ih
  kGDw = 4,      // dW_ih, dW_hh = dG^T [x, h_{t-1}]
};
constexpr int kGemmProbe = 5;
// Untimed rounds first: after one, the own recurrent product still read 7.4 and 11.4-12.0
// us in the probe where it runs 5.1 and 8.4 warm (B = 8 and 16, H = 128, issue 16, session
// 17).
constexpr int kGemmWarm = 3;
constexpr double kBlasMargin = 0.9;
// Rows (of M, or of K for the weight gradients) of the large products' probe: a synthetic
// block (the values do not change the time), the own GEMM's K chunk, so that the probe
// costs a few ms at most and allocates only block-sized scratch (peak memory). Both
// candidates write into outputs allocated once, before the timed calls (at::mm_out, not
// at::mm): a fresh output per timed call (six per probe, 512 KB each for the input
// projection at H = 128) grew glibc's heap by ~2.5 MB that the process kept (its dynamic
// mmap threshold moves such blocks onto the heap once one is freed, and the aligned
// requests did not reuse the freed block; issue 16, BENCHMARKS.md "The first step's
// memory").
constexpr int64_t kProbeRows = 256;

// Rows per task of a step split over batch rows (lstm_step.h, StepSplit's third form),
// 0 where there is no such form (fewer than two rows per thread): the drivers and the
// recurrent product's probe, which times one task's share, use the same rule.
inline int64_t row_share(int64_t B, int64_t threads) {
  return threads > 1 && B >= 2 * threads ? (B + threads - 1) / threads : 0;
}

// The BLAS candidate's output: the own candidate's (rows, ld) output narrowed to n columns
// where that is contiguous (ld == n), else one of its own, allocated once per probe.
inline Tensor blas_out(const Tensor& own_out, int64_t n) {
  Tensor v = own_out.narrow(1, 0, n);
  return v.is_contiguous() ? v : at::empty({own_out.size(0), n}, own_out.options());
}

inline double median_of(const double* v, int n) {
  std::vector<double> w(v, v + n);
  std::sort(w.begin(), w.end());
  return n % 2 ? w[n / 2] : 0.5 * (w[n / 2 - 1] + w[n / 2]);
}

// key: {kind, sizeof(T), M, K, N, threads}
using GemmKey = std::array<int64_t, 6>;
struct GemmPlan {
  bool own = true, measured = false;
  double t_own = 0, t_blas = 0;  // medians, seconds per call of the probe
};

// A process-wide cache of decisions and its lock: the GEMM plans here, the per-step split
// in lstm_step.h (StepSplit).
template <typename Key, typename Plan>
struct PlanCache {
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::map<Key, Plan>& map() {
    static std::map<Key, Plan> m;
    return m;
  }
};
using GemmPlans = PlanCache<GemmKey, GemmPlan>;

// Forced modes: 1 own, 0 BLAS, -1 measure (g_gemm_mode 0).
inline int gemm_forced() {
  if (g_gemm_mode == 0) return -1;
  return g_gemm_mode >= 4 ? 1 : 0;
}

inline GemmKey gemm_key(int kind, int64_t tsize, int64_t M, int64_t K, int64_t N) {
  return GemmKey{kind, tsize, M, K, N, int64_t(at::get_num_threads())};
}

// The cached decision for `key`: 1 own, 0 BLAS, -1 none yet.
inline int cached_own(const GemmKey& key) {
  std::lock_guard<std::mutex> lock(GemmPlans::mutex());
  auto it = GemmPlans::map().find(key);
  return it == GemmPlans::map().end() ? -1 : int(it->second.own);
}

// Measure `own()` against `blas()` (each runs the product, or its probe block, once) and
// record the decision for `key`; a concurrent one stands. `own_serial` and `own_rows`,
// where given, are the own kernel on the calling thread alone, over all rows and over one
// thread's share of them, timed in the same rounds: the own kernel's time is then the
// fastest of the medians (recurrent_mode says why).
template <typename F1, typename F2, typename F3 = std::nullptr_t>
bool measure_own(const GemmKey& key, const F1& own, const F2& blas,
                 const F3& own_serial = nullptr, const std::function<void()>& own_rows = {}) {
  constexpr bool serial = !std::is_same<F3, std::nullptr_t>::value;
  const bool rows = bool(own_rows);
  auto time = [](const auto& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  double to[kGemmProbe], tb[kGemmProbe], ts[kGemmProbe], tr[kGemmProbe];
  for (int w = 0; w < kGemmWarm; ++w) {
    own();
    blas();
    if constexpr (serial) own_serial();
    if (rows) own_rows();
  }
  for (int r = 0; r < kGemmProbe; ++r) {
    to[r] = time(own);
    tb[r] = time(blas);
    if constexpr (serial) ts[r] = time(own_serial);
    if (rows) tr[r] = time(own_rows);
  }
  GemmPlan plan;
  plan.t_own = median_of(to, kGemmProbe);
  if constexpr (serial) plan.t_own = std::min(plan.t_own, median_of(ts, kGemmProbe));
  if (rows) plan.t_own = std::min(plan.t_own, median_of(tr, kGemmProbe));
  plan.t_blas = median_of(tb, kGemmProbe);
  plan.own = !(plan.t_blas < kBlasMargin * plan.t_own);
  plan.measured = true;
  std::lock_guard<std::mutex> lock(GemmPlans::mutex());
  return GemmPlans::map().emplace(key, plan).first->second.own;
}

// The recurrent products: WeightGemm's `force` for weight w used `reuse` times over M rows.
// -1 (WeightGemm decides as before: the unpacked loops at M <= kGemvRows, plain BLAS for a
// weight used once or twice) unless the default mode, M > kGemvRows and reuse > 2; then 4
// (own, packed panels) or the BLAS (2: MKL packed, float32; else 1), measured on the real
// weight with a synthetic A (its values do not change the time) into scratch C. Keyed on
// M = B: the sequence length does not enter. The own kernel is timed split over the
// threads, on the calling thread alone and, with two rows per thread or more, on one
// thread's share of the rows, and the fastest counts: a step may run its product serially
// or split over batch rows (StepSplit), the BLAS splits its own. Counted whole, the own
// product lost to MKL's in the probe where the step over rows won (B = 8 and 16, H = 128 on
// a 2-vCPU Xeon: own 7.1-7.4 / 11.4-12.1 us against 4.6-4.9 / 7.6-7.9; the training step
// with the BLAS forward 1.13-1.18x torch.nn.LSTM against 1.31x over rows; issue 16,
// session 17). Where a parallel region's start
// is slow (OMP_WAIT_POLICY=PASSIVE: the other thread sleeps between regions) both split
// candidates paid it in the probe, about 75 us each at B = 16, H = 128 on a 2-vCPU Xeon,
// and the BLAS won the toss in 4 of about 35 processes; it then ran every step split,
// 2.6x slower training and 3.6x slower forward than the own kernel serially (issue 16).
// Where the step splits by rule (kSplitSure) the serial time is not the one that runs, but
// at those sizes the split one is the smaller and counts.
template <typename T>
int recurrent_mode(const Tensor& w, int64_t M, bool nt, int64_t reuse, int64_t groups = 1) {
  if (g_gemm_mode != 0 || M <= kGemvRows || reuse <= 2) return -1;
  const Blas& blas = Blas::get();
  const bool can_pack = std::is_same<T, float>::value && blas.pack_size != nullptr;
  const int blas_mode = can_pack ? 2 : 1;
  const int64_t N = nt ? w.size(0) : w.size(1), K = nt ? w.size(1) : w.size(0);
  const GemmKey key = gemm_key(nt ? kGRecFwd : kGRecBwd, sizeof(T), M, K, N);
  const int cached = cached_own(key);
  if (cached >= 0) return cached ? 4 : blas_mode;
  std::optional<WeightGemm<T>> go, gb;
  go.emplace(w, M, nt, 1000, groups, 4);
  gb.emplace(w, M, nt, 1000, groups, blas_mode);
  const Tensor a = at::full({M, K}, 0.5, w.options());
  const Tensor c = at::empty({M, std::max(go->ldc(), gb->ldc())}, w.options());
  const T* ap = a.data_ptr<T>();
  T* cp = c.data_ptr<T>();
  // a step split over batch rows (two rows per thread or more) has each thread multiply
  // its share of the rows by all of W on its own (lstm_step.h)
  const int64_t share = row_share(M, at::get_num_threads());
  std::function<void()> rows;
  if (share)
    rows = [&] {
      gemm_block<T>(0, share, K, ap, K, 1, go->packed.template data_ptr<T>(), cp, go->ldc(),
                    0, go->ldc(), false, nullptr, nullptr);
    };
  const bool own = measure_own(
      key, [&] { go->run(ap, K, T(0), cp, go->ldc()); },
      [&] { gb->run(ap, K, T(0), cp, gb->ldc()); },
      [&] { go->run(ap, K, T(0), cp, go->ldc(), /*par=*/false); }, rows);
  return own ? 4 : blas_mode;
}

// The large products (input projection, dx, weight gradients) of a layer-direction with
// T_ steps of B rows: the decision (true: own) of product `kind` keyed (M, K, N), cached or
// measured now by `measure(key)` (which builds the probe's operands, calls measure_own).
// Forced modes decide without a plan; so does B = 1 (the own kernel, unmeasured and
// unrecorded: no MKL buffers, the peak-memory target). Otherwise the plan is taken as soon
// as a product of the shape comes, even below the kPackRows rows where the drivers use it
// (they take the unpacked loops there), as long as the call is a sequence (T_ > 2, the
// recurrent products' rule): so a short warm-up pays the probe and the first step of a
// longer sequence does not. A weight used once or twice (LSTMCell) below kPackRows rows
// probes nothing.
//
// The probe is a synthetic block of kProbeRows rows (the own GEMM's K chunk: a few ms,
// block-sized scratch), so the key holds kProbeRows in place of T*B: one plan per weight
// shape, whatever the sequence length (issue 16: keyed on T*B, every new length probed
// again, inside the step that speed.py's memory run measures).
template <typename F>
bool large_own(int kind, int64_t tsize, int64_t M, int64_t K, int64_t N, int64_t T_, int64_t B,
               const F& measure) {
  const int forced = gemm_forced();
  if (forced >= 0) return forced == 1;
  if (B <= kGemvRows || (T_ * B < kPackRows && T_ <= 2)) return true;
  const GemmKey key = gemm_key(kind, tsize, M, K, N);
  const int cached = cached_own(key);
  return cached >= 0 ? cached == 1 : measure(key);
}

// The input projection x (TB, I) W_ih^T (GH, I): own (the packed big_gemm) or at::mm.
// Key (kGProj, kProbeRows, I, GH).
template <typename T>
bool proj_own(const Tensor& w_ih, int64_t T_, int64_t B) {
  const int64_t R = kProbeRows, I = w_ih.size(1), GH = w_ih.size(0);
  return large_own(kGProj, sizeof(T), R, I, GH, T_, B, [&](const GemmKey& key) {
    const Tensor xr = at::full({R, I}, 0.5, w_ih.options());
    const WeightGemm<T> g(w_ih, R, /*nt=*/true, /*reuse=*/1000, 1, 4);
    const Tensor c = at::empty({R, g.ldc()}, w_ih.options());
    Tensor cb = blas_out(c, GH);
    return measure_own(
        key,
        [&] {
          big_gemm<T>(R, I, GH, xr.data_ptr<T>(), I, 1, g.packed.template data_ptr<T>(),
                      c.template data_ptr<T>(), g.ldc(), nullptr);
        },
        [&] { at::mm_out(cb, xr, w_ih.t()); });
  });
}

// dx = dG (TB, GH) W_ih (GH, I): own (W_ih packed, big_gemm) or at::mm. Key (kGDx,
// kProbeRows, GH, I); packing, once per call, outside the time.
template <typename T>
bool dx_own(const Tensor& w_ih, int64_t T_, int64_t B) {
  const int64_t R = kProbeRows, GH = w_ih.size(0), I = w_ih.size(1);
  return large_own(kGDx, sizeof(T), R, GH, I, T_, B, [&](const GemmKey& key) {
    const int64_t Ip = (I + kPanel<T> - 1) / kPanel<T> * kPanel<T>;
    const Tensor dr = at::full({R, GH}, 0.5, w_ih.options());
    const Tensor wp = at::empty({Ip * GH}, w_ih.options());
    pack_rows<T>(w_ih.data_ptr<T>(), I, GH, 0, GH, I, wp.data_ptr<T>());
    const Tensor c = at::empty({R, Ip}, w_ih.options());
    Tensor cb = blas_out(c, I);
    return measure_own(
        key,
        [&] {
          big_gemm<T>(R, GH, I, dr.data_ptr<T>(), GH, 1, wp.data_ptr<T>(), c.data_ptr<T>(),
                      Ip, nullptr);
        },
        [&] { at::mm_out(cb, dr, w_ih); });
  });
}

// dW_ih = dG^T x and dW_hh = dG^T h_{t-1} (dG (TB, GH), x (TB, I), h (TB, P)): own (one
// GEMM over x's and h's panels, dG read transposed, as backward_impl) or two at::mm. Key
// (kGDw, GH, kProbeRows, I + P); packing inside the time (the own path packs x and h in
// every call). Two shapes with the same GH and I + P share a plan (a speed choice only).
template <typename T>
bool dw_own(int64_t GH, int64_t I, int64_t P, const at::TensorOptions& opts, int64_t T_,
            int64_t B) {
  constexpr int64_t PW = kPanel<T>, R = kProbeRows;
  return large_own(kGDw, sizeof(T), GH, R, I + P, T_, B, [&](const GemmKey& key) {
    const int64_t Ip = (I + PW - 1) / PW * PW, Pp = (P + PW - 1) / PW * PW;
    const Tensor dr = at::full({R, GH}, 0.5, opts), xr = at::full({R, I}, 0.5, opts);
    const Tensor hr = at::full({R, P}, 0.5, opts);
    const Tensor xh = at::empty({(Ip + Pp) * R}, opts);
    const Tensor dwi = at::empty({GH, Ip}, opts), dwh = at::empty({GH, Pp}, opts);
    Tensor bi = blas_out(dwi, I), bh = blas_out(dwh, P);
    return measure_own(
        key,
        [&] {
          T* xp = xh.data_ptr<T>();
          pack_rows<T>(xr.data_ptr<T>(), I, R, 0, R, I, xp);
          pack_rows<T>(hr.data_ptr<T>(), P, R, 0, R, P, xp + Ip * R);
          big_gemm<T>(GH, R, Ip + Pp, dr.data_ptr<T>(), 1, GH, xp, dwi.data_ptr<T>(), Ip,
                      nullptr, /*acc=*/false, dwh.data_ptr<T>(), Pp, Ip);
        },
        [&] {
          at::mm_out(bi, dr.t(), xr);
          at::mm_out(bh, dr.t(), hr);
        });
  });
}

}  // namespace
