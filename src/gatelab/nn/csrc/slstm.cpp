// The sLSTM cell (xLSTM, Beck et al. 2024, eqs. 8-17): fused forward and hand-written
// backward over one layer-direction, CPU, float32 and float64.
//
// Per step: one GEMM h_{t-1} R^T (ATen's addmm_, MKL), accumulated in place into the input
// projection's block, and one vectorised pointwise pass per batch row (fwd_row: the
// stabilised gates, c, n, m and h; lstm_math.h's exp / sigmoid / tanh for float32). Under
// inference (kOneStep) the trace is one step of scratch. Backward: per step one pointwise
// pass and one GEMM for dh_{t-1}; dW_ih, dR, dx and the bias as large GEMMs after the loop.
// Phase timers (slstm_profile) for benchmarks/slstm_phases.py.
// The stabilizer m carries no gradient (c / n does not depend on it): see cells.py.
//
// Registered with TORCH_LIBRARY under the extension's own name (the build hash), so that
// two builds loaded in one process never clash; fused_lstm.cpp owns the Python module.
//
// Variable names follow the derivation: pre_i = i~, li = log i, dli = di'/di~ ...

#include <atomic>
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <vector>

#include "lstm_math.h"  // exp_approx, sigmoid_, tanh_; GL_CLONES, GL_INLINE (common.h)

namespace {

// ----------------------------------------------------------------------- phase timers
// Wall and process CPU seconds per phase, summed while on (slstm_profile; for
// benchmarks/slstm_phases.py). Off, a phase costs one test of a flag.
enum {
  kFProj, kFGemm, kFPoint, kFAll,     // forward
  kBPoint, kBGemm, kBAfter, kBAll,    // backward
  kSlots
};
bool g_prof_on = false;
double g_prof[2 * kSlots] = {0};  // wall, then process CPU

inline double clock_s(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Phase {
  int slot;
  double w0 = 0, c0 = 0;
  explicit Phase(int s) : slot(s) {
    if (!g_prof_on) return;
    w0 = clock_s(CLOCK_MONOTONIC);
    c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  }
  void stop() {
    if (!g_prof_on || slot < 0) return;
    g_prof[slot] += clock_s(CLOCK_MONOTONIC) - w0;
    g_prof[kSlots + slot] += clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    slot = -1;
  }
  ~Phase() { stop(); }
};

// on: 1 starts (and resets) the timers, 0 stops them. Returns the sums so far, wall seconds
// per phase then process CPU seconds, in the enum's order.
std::vector<double> slstm_profile(int64_t on) {
  std::vector<double> out(g_prof, g_prof + 2 * kSlots);
  std::fill(g_prof, g_prof + 2 * kSlots, 0.0);
  g_prof_on = on != 0;
  return out;
}

constexpr int64_t kExpInput = 1;   // i = exp(i~), else sigmoid
constexpr int64_t kExpForget = 2;  // f = exp(f~), else sigmoid
constexpr int64_t kOneStep = 8;    // inference: keep one step of acts, cells, norms, dlog
// Units per thread in the pointwise passes, ATen's own grain: a pass over fewer runs on one
// thread, because on a shared machine a split pass can wait a time slice for its other half.
constexpr int64_t kGrain = 32768;

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                  at::IntArrayRef shape) {
  TORCH_CHECK(t.defined(), "slstm: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "slstm: ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "slstm: ", name, " has dtype ", t.scalar_type(),
              "; expected ", dtype, " like x");
  TORCH_CHECK(t.sizes() == shape, "slstm: ", name, " has shape ", t.sizes(), "; expected ",
              shape);
  TORCH_CHECK(t.is_contiguous(), "slstm: ", name, " must be contiguous");
}

// -> lengths as a vector (all T when undefined), checked 0 <= len <= T.
std::vector<int64_t> check_lengths(const c10::optional<at::Tensor>& lengths, int64_t T,
                                   int64_t B) {
  std::vector<int64_t> len(B, T);
  if (!lengths.has_value() || !lengths->defined()) return len;
  const at::Tensor& l = *lengths;
  TORCH_CHECK(l.device().is_cpu() && l.scalar_type() == at::kLong && l.dim() == 1 &&
                  l.size(0) == B && l.is_contiguous(),
              "slstm: lengths must be a contiguous CPU int64 tensor of shape (", B,
              ",), got ", l.scalar_type(), " ", l.sizes());
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= T, "slstm: lengths[", b, "] = ", p[b],
                "; expected 0 <= length <= T = ", T);
    len[b] = p[b];
  }
  return len;
}

// a (M, K) times w (N, K) transposed -> (M, N), for the input projection and dx. float32
// goes to oneDNN through torch's own mkldnn::_linear_pointwise (the op torch.compile's CPU
// backend calls) when this build of torch registers it: at those two shapes it beats
// ATen's mm (MKL) on the Zen 3 too (33 against 39 ms and 28 against 42 ms per call, B = 64,
// T = 100, 1 thread). Per step (64 x 256 x 1024) it lost to at::mm there (613 against
// 480 us; 76 against 34 us at B = 8, H = 128), and so did the weight gradients with the
// transposed copies it needs (81 against 64 ms): those take ATen's ops (BENCHMARKS.md,
// "The sLSTM on the Zen 3"). float64 and torch builds without oneDNN use at::mm.
// The op is private to torch: if its schema differs from the one this was written against,
// or a call fails, it is never used again and at::mm serves.
std::atomic<bool> g_onednn_ok{true};

at::Tensor gemm_nt(const at::Tensor& a, const at::Tensor& w, const at::Tensor& bias = {}) {
  static const auto op =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  static const bool known = op.has_value() && op->schema().arguments().size() == 6 &&
                            op->schema().returns().size() == 1;
  if (known && g_onednn_ok.load(std::memory_order_relaxed) && a.scalar_type() == at::kFloat) {
    try {
      std::vector<c10::IValue> stack;
      stack.reserve(6);
      stack.emplace_back(a);
      stack.emplace_back(w);
      stack.emplace_back(bias.defined() ? c10::IValue(bias) : c10::IValue());
      stack.emplace_back(std::string("none"));
      stack.emplace_back(c10::List<std::optional<at::Scalar>>());
      stack.emplace_back(std::string(""));
      op->callBoxed(&stack);
      if (stack.size() == 1 && stack.back().isTensor()) return stack.back().toTensor();
    } catch (const c10::Error&) {
    }
    g_onednn_ok.store(false, std::memory_order_relaxed);
  }
  return bias.defined() ? at::addmm(bias, a, w.t()) : at::mm(a, w.t());
}

struct Sizes {
  int64_t T, B, I, H;
};

// The arguments both passes share: x (T, B, I), W_ih (4H, I), R (4H, H), biases (4H,).
Sizes check_common(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const c10::optional<at::Tensor>& b_ih,
                   const c10::optional<at::Tensor>& b_hh) {
  TORCH_CHECK(x.defined() && x.dim() == 3, "slstm: x must be (T, B, I), got ",
              x.defined() ? x.sizes() : at::IntArrayRef{});
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "slstm: x has dtype ", dtype, "; expected float32 or float64");
  Sizes s{x.size(0), x.size(1), x.size(2), 0};
  TORCH_CHECK(s.T > 0, "slstm: x has T = ", s.T, " steps; expected T > 0");
  TORCH_CHECK(s.B > 0, "slstm: x has batch B = ", s.B, "; expected B > 0");
  TORCH_CHECK(s.I > 0, "slstm: x has I = ", s.I, " features; expected I > 0");
  TORCH_CHECK(w_hh.defined() && w_hh.dim() == 2 && w_hh.size(1) > 0 &&
                  w_hh.size(0) == 4 * w_hh.size(1),
              "slstm: weight_hh must be (4H, H), got ",
              w_hh.defined() ? w_hh.sizes() : at::IntArrayRef{});
  s.H = w_hh.size(1);
  check_tensor(x, "x", dtype, {s.T, s.B, s.I});
  check_tensor(w_ih, "weight_ih", dtype, {4 * s.H, s.I});
  check_tensor(w_hh, "weight_hh", dtype, {4 * s.H, s.H});
  if (b_ih.has_value() && b_ih->defined()) check_tensor(*b_ih, "bias_ih", dtype, {4 * s.H});
  if (b_hh.has_value() && b_hh->defined()) check_tensor(*b_hh, "bias_hh", dtype, {4 * s.H});
  return s;
}

// ----------------------------------------------------------------------- pointwise math
// float32 takes lstm_math.h's branch-free exp / sigmoid / tanh (Cephes, ~2 ulp), which GCC
// vectorises inside the GL_CLONES row functions below (AVX2 / AVX-512 clones); float64
// takes libm's. The step used to run ATen's sigmoid / tanh / log-sigmoid / exp over
// (B, nH) slices and two passes for the rest: on the Zen 3 those five ATen calls per step
// took 186 us at B = 8, H = 128 (more than the GEMM), and the step's pointwise work took
// about as long as the recurrent GEMM at B = 64, H = 256 (BENCHMARKS.md, "The sLSTM on
// the Zen 3").

GL_INLINE float exp_(float x) { return exp_approx(x); }
GL_INLINE double exp_(double x) { return std::exp(x); }

// log(1 + u) for float u in [0, 1], given w = 1 + u: Cephes logf's polynomial on w reduced
// to [sqrt(1/2), sqrt(2)), plus (u - (w - 1)) / w, the rounding error of 1 + u, so that a
// tiny u keeps its value (log1p, not log). Branch-free, so that loops over it vectorise.
GL_INLINE float log1p_unit(float u, float w) {
  const bool big = w > 1.41421356f;
  const float e = big ? 1.0f : 0.0f;
  const float x = (big ? 0.5f * w : w) - 1.0f;  // exact (Sterbenz)
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z - 2.12194440e-4f * e - 0.5f * z;
  return x + y + 0.693359375f * e + (u - (w - 1.0f)) / w;
}
GL_INLINE double log1p_unit(double u, double) { return std::log1p(u); }

// Selects on values, not std::min / std::max (which return references: GCC 12 then kept
// a branch per element and vectorised none of fwd_row). Written so that a NaN passes on
// (x > 0 is false for NaN), as torch.clamp in the reference does.
template <typename T>
GL_INLINE T min0(T x) { return x > T(0) ? T(0) : x; }
GL_INLINE float abs_(float x) { return __builtin_fabsf(x); }
GL_INLINE double abs_(double x) { return __builtin_fabs(x); }

// log sigmoid(x) = min(x, 0) - log(1 + e^-|x|), and 1 - sigmoid(x) = sigmoid(-x) from the
// same exponential (the slope of a sigmoid gate's log: d log sigmoid(x) / dx).
template <typename T>
struct LogSigmoid {
  T log, one_minus;
};
template <typename T>
GL_INLINE LogSigmoid<T> log_sigmoid_(T x) {
  const T e = exp_(-abs_(x));
  const T w = T(1) + e;
  return {min0(x) - log1p_unit(e, w), (x >= T(0) ? e : T(1)) / w};
}

// One row's step over its H units, in one pass: the stabilizer m_t, the gates i', f'
// (exp(log gate - m)), z, o, the states, the output and the log-gate slopes. p: the
// pre-activations (4H: i~, f~, z~, o~); hb, cb, nb, mb: the state, in place; o_t, a_t
// (4H), c_t, n_t, m_t, d_t (2H): the step's outputs. The pointers are restrict
// parameters: restrict locals copied from a struct left GCC 12's dependence analysis
// failing, and the loop scalar.
template <typename T, bool kExpI, bool kExpF>
GL_CLONES void fwd_row(const T* __restrict p, T* __restrict hb, T* __restrict cb,
                       T* __restrict nb, T* __restrict mb, T* __restrict o_t,
                       T* __restrict a_t, T* __restrict c_t, T* __restrict n_t,
                       T* __restrict m_t, T* __restrict d_t, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    // the log gates; for a sigmoid gate also 1 - sigmoid(pre), for its slope
    LogSigmoid<T> gi{p[j], T(0)}, gf{p[H + j], T(0)};
    if constexpr (!kExpI) gi = log_sigmoid_(gi.log);
    if constexpr (!kExpF) gf = log_sigmoid_(gf.log);
    const T li = gi.log, one_minus_i = gi.one_minus, one_minus_f = gf.one_minus;
    const T lfm = gf.log + mb[j];  // log f + m_{t-1}
    // max(lfm, li) that keeps a NaN of lfm (as torch.maximum): lfm < li is false for NaN
    const T m_new = nb[j] == T(0) ? li : lfm < li ? li : lfm;
    const T u = lfm - m_new;  // > 0 only from n = 0: f' = min(e^u, 1)
    const T i = exp_(li - m_new), f = exp_(min0(u));
    const T z = tanh_(p[2 * H + j]), o = sigmoid_(p[3 * H + j]);
    const T c_new = f * cb[j] + i * z;
    const T n_new = f * nb[j] + i;
    const T h_new = o * (c_new / n_new);
    a_t[j] = i;
    a_t[H + j] = f;
    a_t[2 * H + j] = z;
    a_t[3 * H + j] = o;
    d_t[j] = kExpI ? i : i * one_minus_i;                          // di'/di~
    d_t[H + j] = u > T(0) ? T(0) : kExpF ? f : f * one_minus_f;  // df'/df~
    c_t[j] = cb[j] = c_new;
    n_t[j] = nb[j] = n_new;
    m_t[j] = mb[j] = m_new;
    o_t[j] = hb[j] = h_new;
  }
}

template <typename T>
using FwdRowFn = void (*)(const T*, T*, T*, T*, T*, T*, T*, T*, T*, T*, T*, int64_t);

template <typename T>
FwdRowFn<T> fwd_row_for(int64_t flags) {
  switch (flags & (kExpInput | kExpForget)) {
    case 0: return &fwd_row<T, false, false>;
    case kExpInput: return &fwd_row<T, true, false>;
    case kExpForget: return &fwd_row<T, false, true>;
    default: return &fwd_row<T, true, true>;
  }
}

// The step t's pointwise pass over the batch rows; pre (B, 4H) = x_t W_ih^T + b + h R^T.
// kept: the step's slot in the kept tensors (t, or 0 for inference's one step).
template <typename T>
void forward_step(int64_t t, int64_t kept, const Sizes& s, const std::vector<int64_t>& len,
                  FwdRowFn<T> row_fn, const T* pre, T* h, T* c, T* n, T* m, T* out, T* acts,
                  T* cells, T* norms, T* stabs, T* dlog) {
  const int64_t B = s.B, H = s.H;
  at::parallel_for(0, B, std::max<int64_t>(1, kGrain / H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t k = kept * B + b;
      T* o_t = out + (t * B + b) * H;
      if (t >= len[b]) {  // padding: state carried, output and trace zero
        std::fill(o_t, o_t + H, T(0));
        std::fill(acts + k * 4 * H, acts + (k + 1) * 4 * H, T(0));
        for (T* a : {cells, norms, stabs}) std::fill(a + k * H, a + (k + 1) * H, T(0));
        std::fill(dlog + k * 2 * H, dlog + (k + 1) * 2 * H, T(0));
        continue;
      }
      row_fn(pre + b * 4 * H, h + b * H, c + b * H, n + b * H, m + b * H, o_t,
             acts + k * 4 * H, cells + k * H, norms + k * H, stabs + k * H, dlog + k * 2 * H, H);
    }
  });
}

// x (T, B, I), state0 = h0, c0, n0, m0 each (B, H), W_ih (4H, I), R (4H, H) dense (the
// caller expands block-diagonal heads), biases (4H,) or None, lengths (B,) int64 or None.
// flags: kExpInput | kExpForget, and kOneStep for inference (nothing kept for backward).
// Returns out (T, B, H), h_n, c_n, n_n, m_n, acts (T, B, 4H) = i', f', z, o, cells, norms,
// stabs (T, B, H) and dlog (T, B, 2H) = di'/di~, df'/df~ (kept for backward); with
// kOneStep, acts, cells, norms, stabs and dlog are one step's scratch (1, B, .).
// Per step one GEMM, accumulated in place into the input projection's (B, 4H) block
// (at::addmm_: no output tensor, no separate add), then one pass over the rows.
std::vector<at::Tensor> slstm_forward(const at::Tensor& x, const at::Tensor& h0,
                                      const at::Tensor& c0, const at::Tensor& n0,
                                      const at::Tensor& m0, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh,
                                      const c10::optional<at::Tensor>& b_ih,
                                      const c10::optional<at::Tensor>& b_hh,
                                      const c10::optional<at::Tensor>& lengths,
                                      int64_t flags) {
  Phase all(kFAll);
  const Sizes s = check_common(x, w_ih, w_hh, b_ih, b_hh);
  TORCH_CHECK(flags >= 0 && (flags & ~(kExpInput | kExpForget | kOneStep)) == 0,
              "slstm: flags = ", flags, "; expected a combination of 1 (exp input), 2 (exp ",
              "forget) and 8 (inference: keep one step)");
  const auto dtype = x.scalar_type();
  const char* names[] = {"h0", "c0", "n0", "m0"};
  const at::Tensor* states[] = {&h0, &c0, &n0, &m0};
  for (int k = 0; k < 4; ++k) check_tensor(*states[k], names[k], dtype, {s.B, s.H});
  const auto len = check_lengths(lengths, s.T, s.B);
  const int64_t T = s.T, B = s.B, H = s.H;
  const bool one_step = flags & kOneStep;
  const int64_t TK = one_step ? 1 : T;  // steps kept

  // Input projection of all steps at once, both biases folded in: (T*B, 4H).
  Phase proj(kFProj);
  at::Tensor bias;
  if (b_ih.has_value() && b_ih->defined()) bias = b_ih->clone();
  if (b_hh.has_value() && b_hh->defined()) bias = bias.defined() ? bias.add_(*b_hh) : *b_hh;
  // contiguous: the step reads xw[t] as (B, 4H) rows through its data pointer (a no-op for
  // at::mm's result; oneDNN's is not promised to be)
  at::Tensor xw =
      gemm_nt(x.reshape({T * B, s.I}), w_ih, bias).contiguous().view({T, B, 4 * H});
  proj.stop();

  at::Tensor h = h0.clone(), c = c0.clone(), n = n0.clone(), m = m0.clone();
  at::Tensor out = at::empty({T, B, H}, x.options());
  at::Tensor acts = at::empty({TK, B, 4 * H}, x.options());
  at::Tensor cells = at::empty({TK, B, H}, x.options());
  at::Tensor norms = at::empty({TK, B, H}, x.options());
  at::Tensor stabs = at::empty({TK, B, H}, x.options());
  at::Tensor dlog = at::empty({TK, B, 2 * H}, x.options());
  const at::Tensor r_t = w_hh.t();  // (H, 4H) view

  AT_DISPATCH_FLOATING_TYPES(dtype, "slstm_forward", [&] {
    const FwdRowFn<scalar_t> row_fn = fwd_row_for<scalar_t>(flags);
    for (int64_t t = 0; t < T; ++t) {
      Phase gemm(kFGemm);
      at::Tensor pre = xw[t];  // (B, 4H), contiguous
      pre.addmm_(h, r_t);      // += h_{t-1} R^T
      gemm.stop();
      Phase point(kFPoint);
      forward_step<scalar_t>(t, one_step ? 0 : t, s, len, row_fn, pre.data_ptr<scalar_t>(),
                             h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                             n.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), acts.data_ptr<scalar_t>(),
                             cells.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(),
                             stabs.data_ptr<scalar_t>(), dlog.data_ptr<scalar_t>());
    }
  });
  return {out, h, c, n, m, acts, cells, norms, stabs, dlog};
}

// One row's backward step over its H units (gradients at fixed m): dpre (4H) from dL/dh_t
// (g_out, the output's gradient, may be null, plus dh, the recurrent one), and dc, dn
// carried back in place.
template <typename T>
GL_CLONES void bwd_row(const T* __restrict a, const T* __restrict dl, const T* __restrict cn,
                       const T* __restrict nn, const T* __restrict c_prev,
                       const T* __restrict n_prev, const T* __restrict g_out,
                       const T* __restrict dhb, T* __restrict dcb, T* __restrict dnb,
                       T* __restrict dp, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = a[j], f = a[H + j], z = a[2 * H + j], o = a[3 * H + j];
    const T c = cn[j], n = nn[j];
    const T g = dhb[j] + (g_out ? g_out[j] : T(0));  // dL/dh_t
    const T r = c / n;
    const T d_o = g * r;
    const T d_c = dcb[j] + g * o / n;
    const T d_n = dnb[j] - g * o * r / n;
    const T d_i = d_c * z + d_n;
    const T d_f = d_c * c_prev[j] + d_n * n_prev[j];
    const T d_z = d_c * i;
    dp[j] = d_i * dl[j];
    dp[H + j] = d_f * dl[H + j];
    dp[2 * H + j] = d_z * (T(1) - z * z);
    dp[3 * H + j] = d_o * o * (T(1) - o);
    dcb[j] = d_c * f;
    dnb[j] = d_n * f;
  }
}

template <typename T>
void backward_step(int64_t t, const Sizes& s, const std::vector<int64_t>& len, const T* d_out,
                   const T* acts, const T* cells, const T* norms, const T* dlog, const T* c0,
                   const T* n0, T* dh, T* dc, T* dn, T* dpre) {
  const int64_t B = s.B, H = s.H;
  at::parallel_for(0, B, std::max<int64_t>(1, kGrain / H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* dp = dpre + (t * B + b) * 4 * H;
      if (t >= len[b]) {  // padding: the state passed through, its gradient too
        std::fill(dp, dp + 4 * H, T(0));
        continue;
      }
      const int64_t row = (t * B + b) * H;
      const T* c_prev = t > 0 ? cells + row - B * H : c0 + b * H;
      const T* n_prev = t > 0 ? norms + row - B * H : n0 + b * H;
      bwd_row<T>(acts + row * 4, dlog + row * 2, cells + row, norms + row, c_prev, n_prev,
                 d_out ? d_out + row : nullptr, dh + b * H, dc + b * H, dn + b * H, dp, H);
    }
  });
}

// Gradients of slstm_forward's out, h_n, c_n, n_n (each may be undefined) at fixed m.
// Returns dx (empty unless need_dx), dh0, dc0, dn0, dW_ih, dR, db (for b_ih and b_hh).
// Per step one pass and one GEMM dh_{t-1} = dpre_t R (at::mm_out, into dh when no row is
// padded at t); after the loop dR and dW_ih as at::mm over dpre's transposed view (no
// transposed copies, no concatenated h_{t-1}), dx through oneDNN (gemm_nt).
std::vector<at::Tensor> slstm_backward(
    const c10::optional<at::Tensor>& d_out, const c10::optional<at::Tensor>& d_hn,
    const c10::optional<at::Tensor>& d_cn, const c10::optional<at::Tensor>& d_nn,
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& n0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& out,
    const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& norms,
    const at::Tensor& dlog, const c10::optional<at::Tensor>& lengths, bool need_dx) {
  Phase all(kBAll);
  const Sizes s = check_common(x, w_ih, w_hh, c10::nullopt, c10::nullopt);
  const int64_t T = s.T, B = s.B, H = s.H;
  const auto dtype = x.scalar_type();
  check_tensor(h0, "h0", dtype, {B, H});
  check_tensor(c0, "c0", dtype, {B, H});
  check_tensor(n0, "n0", dtype, {B, H});
  check_tensor(out, "out", dtype, {T, B, H});
  check_tensor(acts, "acts", dtype, {T, B, 4 * H});
  check_tensor(cells, "cells", dtype, {T, B, H});
  check_tensor(norms, "norms", dtype, {T, B, H});
  check_tensor(dlog, "dlog", dtype, {T, B, 2 * H});
  const auto len = check_lengths(lengths, T, B);

  auto state_grad = [&](const c10::optional<at::Tensor>& g, const char* name) {
    if (!g.has_value() || !g->defined()) return at::zeros({B, H}, x.options());
    check_tensor(*g, name, dtype, {B, H});
    return g->clone();
  };
  at::Tensor dh = state_grad(d_hn, "d_hn"), dc = state_grad(d_cn, "d_cn");
  at::Tensor dn = state_grad(d_nn, "d_nn");
  at::Tensor g_out;
  if (d_out.has_value() && d_out->defined()) {
    check_tensor(*d_out, "d_out", dtype, {T, B, H});
    g_out = *d_out;
  }
  at::Tensor dpre = at::empty({T, B, 4 * H}, x.options());
  at::Tensor dh_rec = at::empty({B, H}, x.options());  // steps with padded rows

  AT_DISPATCH_FLOATING_TYPES(dtype, "slstm_backward", [&] {
    const scalar_t* go = g_out.defined() ? g_out.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      Phase point(kBPoint);
      backward_step<scalar_t>(t, s, len, go, acts.data_ptr<scalar_t>(),
                              cells.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(),
                              dlog.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                              n0.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
                              dc.data_ptr<scalar_t>(), dn.data_ptr<scalar_t>(),
                              dpre.data_ptr<scalar_t>());
      point.stop();
      Phase gemm(kBGemm);
      const bool all_in = std::all_of(len.begin(), len.end(), [&](int64_t l) { return t < l; });
      if (all_in) {
        at::mm_out(dh, dpre[t], w_hh);  // (B, H) = dpre_t R
        continue;
      }
      at::mm_out(dh_rec, dpre[t], w_hh);
      scalar_t* dhp = dh.data_ptr<scalar_t>();
      const scalar_t* rec = dh_rec.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        if (t < len[b]) std::copy(rec + b * H, rec + (b + 1) * H, dhp + b * H);
      }
    }
  });

  Phase after(kBAfter);
  const at::Tensor dp = dpre.view({T * B, 4 * H});
  // dR = sum_t dpre_t^T h_{t-1}: h0 at t = 0, then the outputs (a padded step's dpre is 0)
  at::Tensor dw_hh = at::mm(dp.narrow(0, 0, B).t(), h0);  // (4H, H)
  if (T > 1) {
    const int64_t R = (T - 1) * B;  // rows of steps 1 .. T-1
    dw_hh.addmm_(dp.narrow(0, B, R).t(), out.view({T * B, H}).narrow(0, 0, R));
  }
  at::Tensor dw_ih = at::mm(dp.t(), x.reshape({T * B, s.I}));  // (4H, I)
  at::Tensor db = dp.sum(0);
  at::Tensor dx = need_dx ? gemm_nt(dp, w_ih.t().contiguous()).view({T, B, s.I})
                          : at::empty({0}, x.options());
  return {dx, dh, dc, dn, dw_ih, dw_hh, db};
}

}  // namespace

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("slstm_forward", &slstm_forward);
  m.def("slstm_backward", &slstm_backward);
  m.def("slstm_profile", &slstm_profile);
}
