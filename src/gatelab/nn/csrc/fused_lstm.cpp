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
// extension's register-tiled kernel over weights packed once per call (gemm.h); MKL's
// sgemm and packed sgemm_compute (resolved at run time from libtorch) remain as options.
//
// Vectorisation without -march=native: the pointwise kernels are plain loops compiled
// several times (GCC/Clang `target_clones`: AVX-512, AVX2+FMA, baseline) and picked at
// load time for the CPU that runs them, so one build runs on any x86-64. float32 uses the
// polynomial exp below (Cephes' expf, ~2 ulp) so that sigmoid/tanh vectorise; float64
// uses std::exp/std::tanh. No -ffast-math: NaN propagates through every kernel.
//
// Files (one translation unit: the headers are included here only): common.h (includes,
// macros), blas.h (BLAS resolved at run time), gemm.h (the small GEMM library), profile.h
// (phase timers), lstm_math.h (scalar math, Spec), lstm_step.h (pointwise step kernels),
// lstm_forward.h / lstm_backward.h (the drivers); this file: argument checks, the entry
// points and the Python bindings.

#include "lstm_backward.h"
#include "lstm_forward.h"

#include <torch/csrc/autograd/functions/basic_ops.h>  // DelayedError (once_differentiable)

namespace {

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
  TORCH_CHECK(saved.size() >= 11, fn, ": saved holds ", saved.size(),
              " tensors; expected lstm_forward's 11");
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
    saved_ok(7, "mean_ih", {T_, B});
    saved_ok(8, "rstd_ih", {T_, B});
    saved_ok(9, "xhat_hh", {T_, B, GH});
    saved_ok(10, "rstd_hh", {T_, B});
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

// ----------------------------------------------------------------------- autograd node
// One layer-direction as an autograd node (the forward keeps every step, keep = 2): what a
// Python torch.autograd.Function did before, without its cost around the kernels (~50 us
// a forward and ~100 us a backward on the Zen 3, Python and the engine's calls into it),
// which a B = 1 sequence of about a millisecond felt (issue 16). `given` holds the present
// parameters in kParamNames order, `present` their bits (bit k: parameter k given).
// Outputs: out, h_n, c_n and the trace acts, cells (not differentiable).
std::vector<OptTensor> unpack_params(const std::vector<Tensor>& given, int64_t present) {
  std::vector<OptTensor> p(kNumParams);
  size_t j = 0;
  for (int k = 0; k < kNumParams; ++k)
    if (present >> k & 1) p[k] = given[j++];
  return p;
}

// As torch.autograd.function.once_differentiable: the backward is hand-written, so a
// second derivative through it would silently be zero. When the backward runs with grad
// mode on (create_graph=True), its results carry a node that raises if differentiated.
torch::autograd::variable_list once_differentiable(const torch::autograd::variable_list& grads,
                                                   torch::autograd::variable_list result) {
  if (!at::GradMode::is_enabled()) return result;
  bool any = false;
  for (const Tensor& g : grads) any = any || (g.defined() && g.requires_grad());
  if (!any) return result;
  torch::autograd::variable_list in;
  for (const Tensor& r : result) {
    Tensor d = r.defined() ? r.detach() : Tensor();
    if (d.defined()) d.set_requires_grad(true);
    in.push_back(d);
  }
  torch::autograd::DelayedError err(
      "trying to differentiate twice a function that was marked with @once_differentiable "
      "(gatelab's fused LSTM backward is hand-written: no second derivative)",
      int64_t(in.size()));
  return err.apply(std::move(in));
}

struct LstmNode : public torch::autograd::Function<LstmNode> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const Tensor& x, const Tensor& h0,
                                                const Tensor& c0, at::TensorList given,
                                                int64_t present, const OptTensor& lengths,
                                                int64_t flags) {
    const std::vector<Tensor> params = given.vec();
    std::vector<Tensor> res =
        lstm_forward(x, h0, c0, unpack_params(params, present), lengths, flags, 2);
    ctx->mark_non_differentiable({res[3], res[4]});
    ctx->set_materialize_grads(false);
    // y, hr and the layer-norm statistics: internal, never handed out (empty: absent)
    std::vector<Tensor> extras;
    for (size_t k = 5; k < res.size(); ++k)
      extras.push_back(res[k].defined() ? res[k] : at::empty({0}, x.options()));
    ctx->saved_data["extras"] = extras;
    ctx->saved_data["present"] = present;
    ctx->saved_data["flags"] = flags;
    ctx->saved_data["lengths"] = lengths;
    torch::autograd::variable_list keep = {x, h0, c0, res[0], res[3], res[4]};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    return {res[0], res[1], res[2], res[3], res[4]};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list v = ctx->get_saved_variables();
    const std::vector<Tensor> params(v.begin() + 6, v.end());
    // one gradient per forward argument: x, h0, c0, each given parameter, then undefined
    // for present, lengths and flags
    torch::autograd::variable_list out(3 + params.size() + 3);
    auto opt = [](const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined()) return out;
    const Tensor none = at::empty({0}, v[0].options());
    std::vector<Tensor> saved = {v[3], none, none, v[4], v[5]};
    for (const Tensor& t : ctx->saved_data["extras"].toTensorVector()) saved.push_back(t);
    const bool need_dx = ctx->needs_input_grad(0);
    const int64_t present = ctx->saved_data["present"].toInt();
    std::vector<Tensor> g = lstm_backward(
        opt(grads[0]), opt(grads[1]), opt(grads[2]), v[0], v[1], v[2],
        unpack_params(params, present), ctx->saved_data["lengths"].toOptional<Tensor>(),
        ctx->saved_data["flags"].toInt(), saved, need_dx);
    if (need_dx) out[0] = g[0];
    out[1] = g[1];
    out[2] = g[2];
    size_t j = 0;
    for (int k = 0; k < kNumParams; ++k) {
      if (!(present >> k & 1)) continue;
      if (ctx->needs_input_grad(3 + j)) out[3 + j] = g[3 + k];
      ++j;
    }
    return once_differentiable(grads, std::move(out));
  }
};

std::vector<Tensor> lstm_autograd(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                  const std::vector<Tensor>& given, int64_t present,
                                  const OptTensor& lengths, int64_t flags) {
  TORCH_CHECK(present >= 0 && present < (int64_t(1) << kNumParams), "lstm_autograd: present=",
              present, "; expected bits of the ", int(kNumParams), " parameters");
  TORCH_CHECK(__builtin_popcountll(uint64_t(present)) == int64_t(given.size()),
              "lstm_autograd: present=", present, " names ",
              __builtin_popcountll(uint64_t(present)), " parameters, got ", given.size());
  for (size_t j = 0; j < given.size(); ++j)
    TORCH_CHECK(given[j].defined(), "lstm_autograd: given parameter ", j, " is undefined");
  return LstmNode::apply(x, h0, c0, at::TensorList(given), present, lengths, flags);
}

// adaptive: per-step split 1 decided once per shape (measured, cached), 0 always, 2 never,
// 3 always and as two phases where the step has a fused form, 4 always and over batch rows
// where the step has that form (tests, benchmarks).
void set_gemm_mode(int64_t mode, int64_t fused_step, int64_t adaptive) {
  TORCH_CHECK(mode >= 0 && mode <= 5, "gemm mode must be 0..5, got ", mode);
  TORCH_CHECK(adaptive >= 0 && adaptive <= 4, "adaptive must be 0..4, got ", adaptive);
  g_gemm_mode = int(mode);
  g_fused_step = int(fused_step);
  g_adaptive = int(adaptive);
}

// The per-step split decisions cached so far (lstm_step.h, StepSplit), one tuple per shape:
// (kind 0 forward / 1 backward, bytes per element, B, GH, P, spec flags, projection,
// threads, decided, split, median serial step s, median split step s, split as two
// phases, median two-phase step s, split over batch rows, median step over rows s; medians
// 0 where not probed). reset: forget them.
using StepPlanRow = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, bool, bool, double, double, bool, double, bool, double>;
std::vector<StepPlanRow> step_plans(bool reset) {
  std::lock_guard<std::mutex> lock(StepPlans::mutex());
  std::vector<StepPlanRow> r;
  for (const auto& [k, v] : StepPlans::map())
    r.emplace_back(k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], v.decided,
                   v.arm != kArmSerial, v.median(kArmSerial), v.median(kArmSplit),
                   v.arm == kArmTwo, v.median(kArmTwo), v.arm == kArmRows, v.median(kArmRows));
  if (reset) StepPlans::map().clear();
  return r;
}

// The GEMM decisions cached so far (gemm_plan.h), one tuple per product kind and shape:
// (kind 0 recurrent forward / 1 recurrent backward / 2 input projection / 3 dx / 4 weight
// gradients, bytes per element, M, K, N, threads, own kernel, measured, median own s,
// median BLAS s); the large products (2, 3, 4) list kProbeRows (256) for the T*B rows (M
// of 2 and 3, K of 4): one plan for every sequence length. reset: forget them (the next
// call of each shape measures again).
std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, double,
                       double>>
gemm_plans(bool reset) {
  std::lock_guard<std::mutex> lock(GemmPlans::mutex());
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool,
                         double, double>>
      r;
  for (const auto& [k, v] : GemmPlans::map())
    r.emplace_back(k[0], k[1], k[2], k[3], k[4], k[5], v.own, v.measured, v.t_own, v.t_blas);
  if (reset) GemmPlans::map().clear();
  return r;
}

// Override: the decision for product `kind` of shape (M, K, N) and `bytes` per element at
// the current thread count, as if measured (listed as not measured), for tests and
// benchmarks; replaces a cached one. The large products' T*B (M of kinds 2 and 3, K of 4)
// is not part of their key: any value plants the decision for every T*B.
void set_gemm_plan(int64_t kind, int64_t bytes, int64_t M, int64_t K, int64_t N, bool own) {
  TORCH_CHECK(kind >= kGRecFwd && kind <= kGDw, "set_gemm_plan: kind must be 0..4, got ", kind);
  TORCH_CHECK(bytes == 4 || bytes == 8, "set_gemm_plan: bytes must be 4 or 8, got ", bytes);
  TORCH_CHECK(M >= 1 && K >= 1 && N >= 1, "set_gemm_plan: M, K, N must be >= 1, got ", M, ", ",
              K, ", ", N);
  std::lock_guard<std::mutex> lock(GemmPlans::mutex());
  GemmPlan plan;
  plan.own = own;
  if (kind == kGProj || kind == kGDx) M = kProbeRows;
  if (kind == kGDw) K = kProbeRows;
  GemmPlans::map()[GemmKey{kind, bytes, M, K, N, int64_t(at::get_num_threads())}] = plan;
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
  m.def("lstm_autograd", &lstm_autograd,
        "one LSTM layer-direction as an autograd node: (x, h0, c0, given, present, lengths, "
        "flags) -> [out, h_n, c_n, acts, cells]");
  m.def("set_gemm_mode", &set_gemm_mode,
        "GEMM: 0 measured per product (gemm_plans), 1 BLAS, 2 MKL packed, 3 at::mm, 4 own "
        "kernel, 5 gemv; fused_step 0/1",
        py::arg("mode"), py::arg("fused_step") = 1, py::arg("adaptive") = 1);
  m.def("step_plans", &step_plans,
        "per-step split decisions cached per shape (reset=True forgets them)",
        py::arg("reset") = false);
  m.def("gemm_plans", &gemm_plans,
        "own kernel or BLAS per product and shape, measured once (reset=True forgets them)",
        py::arg("reset") = false);
  m.def("set_gemm_plan", &set_gemm_plan,
        "fix own (True) or BLAS for product kind, bytes, M, K, N at this thread count",
        py::arg("kind"), py::arg("bytes"), py::arg("M"), py::arg("K"), py::arg("N"),
        py::arg("own"));
  m.def("bench_gemm", &bench_gemm, "seconds per recurrent GEMM call (M, K, N, mode, reps, double)");
  m.def("profile", &profile, "phase timers: 1 wall / 2 thread CPU (resets), 0 off; returns seconds per phase");
  m.def("bench_parallel", &bench_parallel, "microseconds per empty parallel region");
  m.def("blas_info", &blas_info, "which BLAS entry points were found");
  m.def("ln_block_rows", &ln_block_rows,
        "rows per block of layer norm's after-loop passes, for (T * B, threads)");
  m.def("activation", &activation, "the kernels' sigmoid / tanh, element-wise");
}
