// lstm_step.h: what both drivers read first (DriverInputs), the pointwise forward and backward
// step kernels on their shared StepBase, the row split
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "gemm_plan.h"
#include "lstm_math.h"
#include "profile.h"

namespace {

// ----------------------------------------------------------------------- sizes

// Parameter order of the `params` lists (None where absent).
enum {
  kWih, kWhh, kBih, kBhh, kWhr, kWci, kWcf, kWco, kLnIhW, kLnIhB, kLnHhW, kLnHhB, kLnCW, kLnCB,
  kNumParams
};

template <typename T>
const T* ptr_or_null(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

// What both drivers read first (check_args has checked it): x (T, B, I) and the weights W_ih (GH, I), W_hh (GH, P)
// made contiguous, their sizes (GH = G * H; P = H, or the projection's size) and the
// lengths (B) as int64 (len: their data, or null without lengths).
struct DriverInputs {
  Spec s;
  Tensor x, w_ih, w_hh, len_c;
  const int64_t* len = nullptr;
  int64_t T_, B, I, GH, H, P;
  bool proj;
  at::TensorOptions opts;

  DriverInputs(const Tensor& x_, const std::vector<OptTensor>& p, const OptTensor& lengths,
               int64_t flags)
      : s(flags), x(x_.contiguous()), w_ih(p[kWih]->contiguous()), w_hh(p[kWhh]->contiguous()) {
    T_ = x.size(0), B = x.size(1), I = x.size(2);
    GH = w_ih.size(0), H = GH / s.G, P = w_hh.size(1);
    proj = p[kWhr].has_value();
    opts = x.options();
    if (lengths.has_value()) {
      len_c = lengths->to(at::kLong).contiguous();
      len = len_c.data_ptr<int64_t>();
    }
  }
};

// The fields both step kernels read: the spec, the sizes, the peepholes, the lengths and
// the step t.
template <typename T>
struct StepBase {
  Spec s;
  int64_t B, H, P, GH;
  const T *wci, *wcf, *wco;
  const int64_t* len;
  int64_t t = 0;

  StepBase(const DriverInputs& d, const std::vector<OptTensor>& p)
      : s(d.s), B(d.B), H(d.H), P(d.P), GH(d.GH), wci(ptr_or_null<T>(p[kWci])),
        wcf(ptr_or_null<T>(p[kWcf])), wco(ptr_or_null<T>(p[kWco])), len(d.len) {}
  // false on padding: step t at or past row b's length
  bool real(int64_t b) const { return len == nullptr || t < len[b]; }
};

// x W_ih^T without bias, rows [r0, r1) of x (TB, I), into out (row stride GH): the layer
// norm's raw input projection. The forward computes every row at once, the backward
// recomputes it block by block instead of keeping it (issue 16: one (T, B, GH) buffer
// less); both pick the GEMM from TB alone, and the own GEMM's rows do not depend on the
// block, so the backward normalises the forward's values. Below kPackRows rows the
// weight is read unpacked (gemv_nt: one block, T*B < 256, so the same call both ways).
// at::mm (4H not a multiple of the panel, or another GEMM mode) is called for all rows in
// the forward and for each block in the backward, and may round a row differently by
// ulps: within the float tolerance of a gradient, not the same bits.
template <typename T>
struct LnInputGemm {
  Tensor x, w;  // x (TB, I) contiguous, w (GH, I) contiguous
  int64_t TB, I, GH;
  std::optional<WeightGemm<T>> g;  // the packed own GEMM, else at::mm

  // x_: (T, B, I); the own GEMM or at::mm as gemm_plan.h's proj_own measured (the
  // forward decides, the backward finds the decision cached: the same GEMM both ways)
  LnInputGemm(const Tensor& x_, const Tensor& w_, int64_t TB_)
      : x(x_), w(w_), TB(TB_), I(w_.size(1)), GH(w_.size(0)) {
    if (own_gemm() && GH % kPanel<T> == 0 && proj_own<T>(w, x.size(0), x.size(1)) &&
        TB >= kPackRows)
      g.emplace(w, TB, /*nt=*/true, /*reuse=*/1000);
  }
  static bool own_gemm() { return g_gemm_mode == 0 || g_gemm_mode == 4; }
  void run(int64_t r0, int64_t r1, T* out) const {
    if (own_gemm() && TB < kPackRows) {
      gemv_nt<T>(r1 - r0, I, GH, x.data_ptr<T>() + r0 * I, I, w.data_ptr<T>(), out, GH, false,
                 nullptr);
      return;
    }
    if (g && g->own()) {
      big_gemm<T>(r1 - r0, I, GH, x.data_ptr<T>() + r0 * I, I, 1,
                  g->packed.template data_ptr<T>(), out, GH, nullptr);
      return;
    }
    Tensor o = at::from_blob(out, {r1 - r0, GH}, x.options());
    at::mm_out(o, x.view({TB, I}).narrow(0, r0, r1 - r0), w.t());
  }
};

// ----------------------------------------------------------------------- forward step

template <typename T>
struct FwdStep : StepBase<T> {
  using StepBase<T>::StepBase;
  const T* xw;     // (B, GH): LN(x W_ih^T) + b_ih + b_hh of this step, row stride xw_ld
  int64_t xw_ld;
  const T* hw;     // h_{t-1} W_hh^T: row stride hw_ld, gate k at column k * hw_gs
  int64_t hw_ld, hw_gs;
  T* acts;         // (B, GH): gate activations (the trace), pre-activations meanwhile
  // layer norm only: xw is then the raw x W_ih^T; both row statistics are taken here
  T* xhat_hh;      // (B, GH) the normalised h_{t-1} W_hh^T (kept for backward)
  T *rstd_hh, *mean_ih, *rstd_ih;  // (B) each
  const T *ln_ih_w, *ln_hh_w, *ln_shift, *ln_c_w, *ln_c_b;  // shift: both ln biases + b
  T* c;            // (B, H) state: c_{t-1} in, c_t out (real rows)
  T* c_out;        // (B, H) c_t, zero on padded rows
  T* y;            // (B, H) tanh(LN(c_t)) (or its identity)
  T* hr;           // (B, H) o * y, row stride hr_ld
  int64_t hr_ld;
  T* h_state;      // (B, P) h_t, written here only without projection (padded rows: h_prev)
  const T* h_prev; // (B, P) h_{t-1}: the GEMM reads it meanwhile, so h_t goes elsewhere
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
  if (!a.real(b)) {
    for (int k = 0; k < s.G; ++k) std::memset(A + k * H + j0, 0, sizeof(T) * n);
    std::memset(co, 0, sizeof(T) * n);
    std::memset(y, 0, sizeof(T) * n);
    std::memset(hr, 0, sizeof(T) * n);
    if (a.h_state) std::memcpy(a.h_state + b * a.P + j0, a.h_prev + b * a.P + j0, sizeof(T) * n);
    if (s.ln) {
      for (int k = 0; k < s.G; ++k) std::memset(a.xhat_hh + b * GH + k * H + j0, 0, sizeof(T) * n);
      a.rstd_hh[b] = a.mean_ih[b] = a.rstd_ih[b] = T(0);
    }
    return;
  }
  const T* X = a.xw + b * a.xw_ld;
  const T* __restrict HW = a.hw + b * a.hw_ld;
  const int64_t gs = a.hw_gs;
  // pre-activations: xw + hw, or LN(x W_ih^T) + LN(hw) + biases: both layer norms' row
  // statistics in this pass (rows are whole then: j0 = 0, j1 = H), so that the input
  // projection is normalised here, with no pass of its own and no (T, B, GH) copy of it
  if (s.ln) {
    T mi, ri, mh, rh;
    row_moments(X, GH, kLnEps, &mi, &ri);  // A may be X: read it all first
    double sum = 0, var = 0;
    for (int k = 0; k < s.G; ++k) sum += sum_d(HW + k * gs, H);
    const double mean = sum / double(GH);
    for (int k = 0; k < s.G; ++k) var += sq_dev_d(HW + k * gs, H, mean);
    mh = T(mean);
    rh = T(1.0 / std::sqrt(var / double(GH) + kLnEps));
    T* __restrict xh = a.xhat_hh + b * GH;
    const T* __restrict wi = a.ln_ih_w;
    const T* __restrict wh = a.ln_hh_w;
    const T* __restrict sh = a.ln_shift;
    for (int k = 0; k < s.G; ++k) {
      const T* __restrict hk = HW + k * gs;
      // A is X or apart from it, element for element: no dependence across j (without
      // this GCC kept the loop scalar, 40% of the pass)
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        const int64_t q = k * H + j;
        const T v = (hk[j] - mh) * rh;
        xh[q] = v;
        A[q] = (X[q] - mi) * ri * wi[q] + v * wh[q] + sh[q];
      }
    }
    a.mean_ih[b] = mi;
    a.rstd_ih[b] = ri;
    a.rstd_hh[b] = rh;
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
    if (ai) add_mul(ai, a.wci + j0, cs, n);
    if (af) add_mul(af, a.wcf + j0, cs, n);
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
    if (s.peep) add_mul(ao, a.wco + j0, co, n);
    act_inplace(ao, n, s.gate_tanh);
  }
  // y = tanh(LN(c_t))
  if (s.ln) {  // xhat_c is not kept: backward recomputes it from c_t (row_moments)
    T mean, rstd;
    row_moments(co, H, kLnEps, &mean, &rstd);
    const T* __restrict gw = a.ln_c_w;
    const T* __restrict gb = a.ln_c_b;
    for (int64_t j = 0; j < H; ++j) y[j] = (co[j] - mean) * rstd * gw[j] + gb[j];
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
struct BwdStep : StepBase<T> {
  using StepBase<T>::StepBase;
  const T* acts;     // (B, GH) at t
  const T* c_prev;   // (B, H)
  const T* y;        // (B, H)
  const T *c_t, *ln_c_w;             // layer norm: c_t (B, H), to recompute LN(c_t)
  double *acc_cw, *acc_cb;           // (B, H) sums over t of d ln_c_weight / bias, per row
  double *acc_hw, *acc_hb;           // (B, GH) the same for ln_hh (its bias: every bias)
  double* acc_bias = nullptr;        // (B, GH) sums over t of dG per row (the bias gradient,
                                     // no layer norm), or null
  const T *xhat_hh, *rstd_hh, *ln_hh_w;
  const T* dh_in;    // (B, H) gradient wrt h_t (no projection: the carry), row stride dh_ld
  int64_t dh_ld;
  const T* dout;     // (B, P) gradient of out[t] (no projection only; else folded in),
  int64_t dout_sb;   // row stride dout_sb (0: one row broadcast)
  T* dh_zero;        // carry rows (stride dh_ld) to zero on real rows (beta = 1 GEMM), or null
  T* dc;             // (B, H) carry: dc_t in, dc_{t-1} out
  T* dG;             // (B, GH) d pre-activations at t
  T* dHW;            // (B, GH) d (h_{t-1} W_hh^T) at t (layer norm only)
  T* tmp;            // (B, H) scratch
  T* tmp2;           // (B, H) scratch
};

template <typename T>
GL_CLONES void bwd_rows(const BwdStep<T>& a, int64_t b, int64_t j0, int64_t j1) {
  const Spec& s = a.s;
  const int64_t H = a.H, GH = a.GH, n = j1 - j0;
  T* __restrict D = a.dG + b * GH;
  if (!a.real(b)) {
    for (int k = 0; k < s.G; ++k) std::memset(D + k * H + j0, 0, sizeof(T) * n);
    if (s.ln) {
      for (int k = 0; k < s.G; ++k) std::memset(a.dHW + b * GH + k * H + j0, 0, sizeof(T) * n);
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
      const T* __restrict dout = a.dout + b * a.dout_sb + j0;
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
  if (s.ln) {  // whole rows; xhat_c recomputed into t1 (dh is read no more)
    const T* __restrict cr = a.c_t + b * H;
    T mean, rstd;
    row_moments(cr, H, kLnEps, &mean, &rstd);
    T* xc = t1;  // j0 = 0: the whole row; t1 is dh above (no __restrict: the same memory)
    double* __restrict gw = a.acc_cw + b * H;
    double* __restrict gb = a.acc_cb + b * H;
    for (int64_t j = 0; j < H; ++j) {
      xc[j] = (cr[j] - mean) * rstd;
      gw[j] += double(t2[j]) * double(xc[j]);
      gb[j] += double(t2[j]);
    }
    ln_grad_row(t2, t2, a.ln_c_w, xc, rstd, H);
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
    if (di) add_mul(dc, di, a.wci + j0, n);
    if (df) add_mul(dc, df, a.wcf + j0, n);
  }
  // d (h_{t-1} W_hh^T) through the recurrent layer norm, whole rows
  if (s.ln)
    ln_grad_row_acc(a.dHW + b * GH, D, a.ln_hh_w, a.xhat_hh + b * GH, a.rstd_hh[b], GH,
                    a.acc_hw + b * GH, a.acc_hb + b * GH);
  // the bias gradient, summed here while the row's dG is in cache (issue 16: a pass over
  // all of dG after the loop took 4% of a training step); each (b, column) cell belongs to
  // one task of a step whatever the split, so the sums are the same bits in every mode
  if (a.acc_bias) {
    double* __restrict gb = a.acc_bias + b * GH;
    for (int k = 0; k < s.G; ++k) {
      const T* __restrict dk = D + k * H + j0;
      double* __restrict gk = gb + k * H + j0;
      for (int64_t j = 0; j < n; ++j) gk[j] += double(dk[j]);
    }
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

// Per-step parallelism, decided once per shape and cached for the process. A step split
// over threads waits at its end for the slowest; on a busy machine (other processes on the
// cores) that wait can be a scheduler time slice, milliseconds, for microseconds of work,
// so whether a split pays is measured, not assumed: the steps of a shape go round the
// candidates (kProbe timed steps of each), and the split is kept when its median step is
// clearly faster (under 0.9x the serial median). The measures that keep this probe honest
// (issue 16, session 17; the figures are a 2-vCPU Xeon's, B = 8, H = 128):
// - It starts at the shape's second call. The first call runs serial steps (split ones
//   where the rule below holds), unmeasured: its outputs are fresh memory, and every
//   step's first touches cost about the same in every form, which narrowed the gaps (a
//   form over rows, 8 us a step warm against 10.5 serial, read 15.2 against 15.9).
// - Each timed step follows an untimed one of the same candidate, so that it is timed with
//   the data where its candidate puts them (a step over rows after a serial one first
//   moves half the state to the other core).
// - Six timed steps each: of four, two disturbed readings moved a median.
// - A serial verdict is measured once more, in the next call, before it stands: a moment
//   when the other core is busy slows every split form and no serial step (one process of
//   three kept a forward serial at 10.4 us a step that runs 7 over rows).
// The decision is then fixed for every later step and call of that shape in this process,
// so that the speed cannot drift within a run (issue 16: the earlier per-step back-off
// did, by more than a target's margin). A probe cut short by a short sequence goes on in
// the next call.
// Above kSplitSure multiply-adds per thread in a step's recurrent product (B * GH * P /
// threads) the split is taken without serial probes: there it won at every shape measured
// on the Zen 3 (1.02-1.53x, training or forward; BENCHMARKS.md "The per-step split by
// rule"), while four noisy probe steps (alternating, the first steps of a cold sequence)
// chose serial in some runs and cost up to 1.5x (issue 16: the run-to-run spread at
// H = 512).
// Where the step can be fused (the own GEMM, no layer norm, no projection), a split step
// has two forms, also measured: fused (each thread the GEMM columns of its hidden units,
// then their pointwise pass: one parallel region) and two phases (the GEMM split over
// column panels, then the pointwise pass over rows: two regions). On a Xeon the fused
// split's pointwise pass ran no faster on two threads than on one (each thread reads half
// of every gate's block of each row, four pieces of a row apart), so the two phases won
// at every size from B = 16 (benchmarks/step_split.py); the fused form stays where it
// wins. Where the batch has at least two rows per thread, such a step has a third split
// form, over batch rows (each thread the whole step of its rows: the GEMM over all of
// W_hh, the pointwise pass and, backward, the partial products), the form layer norm and
// projections always take. It shares nothing written between the threads: split over
// hidden units, the two threads write interleaved 256-byte pieces of the same rows (the
// gates, in place over the input projection), and each thread's pointwise pass ran at
// half its serial speed per element; over rows a B = 8 training step was 1.31x
// torch.nn.LSTM against 1.01x split over hidden units (issue 16, session 17).
// g_adaptive: 1 this (the default), 0 always split (fused where it can), 2 never split,
// 3 always split, as two phases where the step has a fused form, 4 always split, over
// rows where the step has that form.
constexpr int kProbe = 6;
constexpr int64_t kSplitSure = int64_t(1) << 21;
using StepKey = std::array<int64_t, 10>;

// The candidates: serial, split (fused where the step can be), split as two phases, split
// over batch rows.
enum StepArm { kArmSerial = 0, kArmSplit = 1, kArmTwo = 2, kArmRows = 3, kArms = 4 };

struct StepPlan {
  int n[kArms] = {};
  double t[kArms][kProbe] = {};
  bool probe[kArms] = {true, true, false, false};  // the candidates of this shape
  bool decided = false;
  int arm = kArmSerial;  // the decision
  int rounds = 0;        // probes completed (a serial verdict is measured twice)
  double median(int a) const { return n[a] ? median_of(t[a], n[a]) : 0.0; }
};

using StepPlans = PlanCache<StepKey, StepPlan>;

// key: {kind (0 forward, 1 backward), sizeof(T), B, GH, P, spec flags, projection,
// threads, and the two modes that change the step's code: the fused-step switch and the
// GEMM the recurrent product actually runs (WeightGemm::mode: a short sequence, T <= 2,
// takes plain BLAS whatever the requested mode, and must not decide for longer ones)}.
// `fusable`: the step has a fused form (then split steps also probe the two phases);
// `by_rows`: it also has a form split over batch rows (then probed too).
struct StepSplit {
  bool allowed;
  StepKey key{};
  StepPlan plan;
  bool fusable, by_rows, two = false, rows = false, dirty = false;
  int arm = kArmSerial;
  int lead = -1;  // the candidate whose untimed lead step ran last (probing), or -1
  bool timed = false;
  bool unmeasured = false;  // this call measures nothing (see above)
  std::chrono::steady_clock::time_point t0;

  StepSplit(bool allowed_, int64_t kind, int64_t tsize, int64_t B, int64_t GH, int64_t P,
            int64_t flags, bool proj, int64_t gemm, bool fusable_, bool by_rows_ = false)
      : allowed(allowed_), fusable(fusable_), by_rows(by_rows_) {
    if (!allowed || g_adaptive != 1) return;
    const int64_t threads = at::get_num_threads();
    key = {kind, tsize, B, GH, P, flags, int64_t(proj), threads, int64_t(g_fused_step), gemm};
    std::lock_guard<std::mutex> lock(StepPlans::mutex());
    auto it = StepPlans::map().find(key);
    if (it != StepPlans::map().end()) {
      plan = it->second;
      return;
    }
    plan.probe[kArmTwo] = fusable;
    plan.probe[kArmRows] = by_rows;
    if (B * GH * P >= kSplitSure * threads) {  // split by rule: no serial probes
      plan.probe[kArmSerial] = false;
      if (!fusable && !by_rows) {
        plan.decided = true;  // unmeasured (step_plans lists no times)
        plan.arm = kArmSplit;
      }
    }
    unmeasured = !plan.decided;  // the shape's first call
    StepPlans::map()[key] = plan;  // the next call of the shape probes
  }
  ~StepSplit() { save(); }

  void save() {
    if (!dirty) return;
    dirty = false;
    std::lock_guard<std::mutex> lock(StepPlans::mutex());
    StepPlan& stored = StepPlans::map()[key];
    if (!stored.decided) stored = plan;  // a concurrent decision stands
  }

  // Whether every step from here on runs split over batch rows (decided so, or forced):
  // then the threads need not meet between steps, since a thread's rows read only what
  // the same thread wrote (the drivers run the rest of the sequence in one region).
  // `split_is_rows`: the step's one split form is over rows (layer norm, projection).
  bool rows_settled(bool split_is_rows = false) const {
    if (!allowed) return false;
    if (split_is_rows) return g_adaptive == 1 ? plan.decided && plan.arm != kArmSerial
                                              : g_adaptive != 2;
    if (!by_rows) return false;
    if (g_adaptive == 4) return true;
    return g_adaptive == 1 && plan.decided && plan.arm == kArmRows;
  }

  // Whether this step splits over threads; `two` (`rows`) then says whether as two phases
  // (over batch rows).
  bool begin() {
    if (!allowed || g_adaptive == 2) {
      two = rows = false;
      return false;
    }
    if (g_adaptive != 1) {
      two = g_adaptive == 3 && fusable;
      rows = g_adaptive == 4 && by_rows;
      return true;
    }
    if (plan.decided) {
      arm = plan.arm;
    } else if (unmeasured) {
      arm = plan.probe[kArmSerial] ? kArmSerial : kArmSplit;
    } else if (lead >= 0) {  // the timed step after its lead
      arm = lead;
      lead = -1;
      timed = true;
      t0 = std::chrono::steady_clock::now();
    } else {  // the lead step of the candidate with the fewest probes, serial first
      arm = -1;
      for (int a = 0; a < kArms; ++a)
        if (plan.probe[a] && (arm < 0 || plan.n[a] < plan.n[arm])) arm = a;
      lead = arm;
      timed = false;
    }
    two = arm == kArmTwo;
    rows = arm == kArmRows;
    return arm != kArmSerial;
  }
  void end() {
    if (!allowed || g_adaptive != 1 || plan.decided || !timed) return;
    timed = false;
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    plan.t[arm][plan.n[arm]++] = dt;
    dirty = true;
    for (int a = 0; a < kArms; ++a)
      if (plan.probe[a] && plan.n[a] < kProbe) return;
    // the fastest split form; the split where it is clearly faster than serial
    int best = kArmSplit;
    for (int a : {kArmTwo, kArmRows})
      if (plan.probe[a] && plan.median(a) < plan.median(best)) best = a;
    if (plan.probe[kArmSerial] && !(plan.median(best) < 0.9 * plan.median(kArmSerial)))
      best = kArmSerial;
    if (best == kArmSerial && plan.rounds == 0) {
      // measured again in the next call (see above)
      for (int& n : plan.n) n = 0;
      plan.rounds = 1;
      unmeasured = true;  // this call's later steps run serial
      save();
      return;
    }
    plan.rounds += 1;
    plan.arm = best;
    plan.decided = true;
    save();
  }
};

}  // namespace
