// The sLSTM cell (xLSTM, Beck et al. 2024, eqs. 8-17): fused forward and hand-written
// backward over one layer-direction, CPU, float32 and float64.
//
// Per step: one GEMM h_{t-1} R^T (oneDNN, see gemm_nt), ATen's vectorised sigmoid / tanh /
// log-sigmoid / exp over the step's block, and two pointwise passes that write the
// stabilised gates, c, n, m and h. Backward: per step one pointwise pass and one GEMM for
// dh_{t-1}; dW_ih, dR, dx and the bias as large GEMMs after the loop.
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
#include <vector>

namespace {

constexpr int64_t kExpInput = 1;   // i = exp(i~), else sigmoid
constexpr int64_t kExpForget = 2;  // f = exp(f~), else sigmoid
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

// a (M, K) times w (N, K) transposed -> (M, N). float32 goes to oneDNN through torch's own
// mkldnn::_linear_pointwise (the op torch.compile's CPU backend calls) when this build of
// torch registers it: on the 2-core AMD EPYC this was built on it ran the step's GEMM
// (64 x 256 x 1024) and the weight-gradient GEMMs about 2x faster than ATen's mm (MKL).
// float64 and torch builds without oneDNN use at::mm.
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

// Scratch of one forward step: the transcendental functions run as ATen's vectorised
// (Sleef) kernels over the whole (B, 4H) step, the rest in two scalar passes. A scalar
// libm loop (exp, log1p, tanh per element) cost 3x the step's GEMM at B=64, H=256.
struct StepBuffers {
  at::Tensor sig;  // (B, 4H) sigmoid(pre): o, and 1 - sigmoid for the log-gate slopes
  at::Tensor lg;   // (B, 2H) log_sigmoid(pre_i, pre_f) (sigmoid input / forget gates)
  at::Tensor z;    // (B, H) tanh(pre_z)
  at::Tensor ea;   // (B, 2H) exp arguments, then i', f'
};

template <typename T>
void forward_step(int64_t t, const Sizes& s, const std::vector<int64_t>& len, int64_t flags,
                  const at::Tensor& pre_t, StepBuffers& buf, T* h, T* c, T* n, T* m, T* out,
                  T* acts, T* cells, T* norms, T* stabs, T* dlog) {
  const int64_t B = s.B, H = s.H;
  const bool exp_i = flags & kExpInput, exp_f = flags & kExpForget;
  // only the blocks that are used: o, and i, f where they are sigmoid gates
  auto sigmoid_block = [&](int64_t k, int64_t n) {
    at::Tensor out = buf.sig.narrow(1, k * H, n * H);
    at::sigmoid_out(out, pre_t.narrow(1, k * H, n * H));
  };
  auto log_sigmoid_block = [&](int64_t k, int64_t n) {
    at::Tensor out = buf.lg.narrow(1, k * H, n * H);
    at::log_sigmoid_out(out, pre_t.narrow(1, k * H, n * H));
  };
  sigmoid_block(3, 1);
  at::tanh_out(buf.z, pre_t.narrow(1, 2 * H, H));
  if (!exp_i && !exp_f) {
    sigmoid_block(0, 2);
    log_sigmoid_block(0, 2);
  } else if (!exp_i || !exp_f) {
    const int64_t k = exp_i ? 1 : 0;  // the one sigmoid gate among i, f
    sigmoid_block(k, 1);
    log_sigmoid_block(k, 1);
  }
  const T* pre = pre_t.data_ptr<T>();
  const T* lg = buf.lg.data_ptr<T>();
  T* ea = buf.ea.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, kGrain / H);

  // pass 1: the stabilizer m_t and the exponents of i', f' (<= 0)
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (t >= len[b]) continue;
      const T* p = pre + b * 4 * H;
      const T* l = lg + b * 2 * H;
      T* e = ea + b * 2 * H;
      T* m_t = stabs + (t * B + b) * H;
      const T* mb = m + b * H;
      const T* nb = n + b * H;
      for (int64_t j = 0; j < H; ++j) {
        const T li = exp_i ? p[j] : l[j];
        const T lfm = (exp_f ? p[H + j] : l[H + j]) + mb[j];  // log f + m_{t-1}
        const T m_new = nb[j] == T(0) ? li : std::max(lfm, li);
        m_t[j] = m_new;
        e[j] = li - m_new;
        e[H + j] = std::min(lfm - m_new, T(0));  // > 0 only from n = 0: f' = min(e^u, 1)
      }
    }
  });
  at::exp_out(buf.ea, buf.ea);

  // pass 2: the states, the output, the trace and the log-gate slopes
  const T* sig = buf.sig.data_ptr<T>();
  const T* zz = buf.z.data_ptr<T>();
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* o_t = out + (t * B + b) * H;
      T* a_t = acts + (t * B + b) * 4 * H;
      T* c_t = cells + (t * B + b) * H;
      T* n_t = norms + (t * B + b) * H;
      T* m_t = stabs + (t * B + b) * H;
      T* d_t = dlog + (t * B + b) * 2 * H;
      if (t >= len[b]) {  // padding: state carried, output and trace zero
        std::fill(o_t, o_t + H, T(0));
        std::fill(a_t, a_t + 4 * H, T(0));
        std::fill(c_t, c_t + H, T(0));
        std::fill(n_t, n_t + H, T(0));
        std::fill(m_t, m_t + H, T(0));
        std::fill(d_t, d_t + 2 * H, T(0));
        continue;
      }
      const T* p = pre + b * 4 * H;
      const T* l = lg + b * 2 * H;
      const T* sg = sig + b * 4 * H;
      const T* e = ea + b * 2 * H;
      const T* zb = zz + b * H;
      T* hb = h + b * H;
      T* cb = c + b * H;
      T* nb = n + b * H;
      T* mb = m + b * H;
      for (int64_t j = 0; j < H; ++j) {
        const T i = e[j], f = e[H + j], z = zb[j], o = sg[3 * H + j];
        const T lfm = (exp_f ? p[H + j] : l[H + j]) + mb[j];
        const bool clamped = lfm - m_t[j] > T(0);
        const T c_new = f * cb[j] + i * z;
        const T n_new = f * nb[j] + i;
        const T h_new = o * (c_new / n_new);
        a_t[j] = i;
        a_t[H + j] = f;
        a_t[2 * H + j] = z;
        a_t[3 * H + j] = o;
        d_t[j] = exp_i ? i : i * (T(1) - sg[j]);                                    // di'/di~
        d_t[H + j] = clamped ? T(0) : exp_f ? f : f * (T(1) - sg[H + j]);  // df'/df~
        c_t[j] = cb[j] = c_new;
        n_t[j] = nb[j] = n_new;
        mb[j] = m_t[j];
        o_t[j] = hb[j] = h_new;
      }
    }
  });
}

// x (T, B, I), state0 = h0, c0, n0, m0 each (B, H), W_ih (4H, I), R (4H, H) dense (the
// caller expands block-diagonal heads), biases (4H,) or None, lengths (B,) int64 or None.
// Returns out (T, B, H), h_n, c_n, n_n, m_n, acts (T, B, 4H) = i', f', z, o, cells, norms,
// stabs (T, B, H) and dlog (T, B, 2H) = di'/di~, df'/df~ (kept for backward).
std::vector<at::Tensor> slstm_forward(const at::Tensor& x, const at::Tensor& h0,
                                      const at::Tensor& c0, const at::Tensor& n0,
                                      const at::Tensor& m0, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh,
                                      const c10::optional<at::Tensor>& b_ih,
                                      const c10::optional<at::Tensor>& b_hh,
                                      const c10::optional<at::Tensor>& lengths,
                                      int64_t flags) {
  const Sizes s = check_common(x, w_ih, w_hh, b_ih, b_hh);
  TORCH_CHECK(flags >= 0 && flags <= (kExpInput | kExpForget), "slstm: flags = ", flags,
              "; expected a combination of 1 (exp input) and 2 (exp forget)");
  const auto dtype = x.scalar_type();
  const char* names[] = {"h0", "c0", "n0", "m0"};
  const at::Tensor* states[] = {&h0, &c0, &n0, &m0};
  for (int k = 0; k < 4; ++k) check_tensor(*states[k], names[k], dtype, {s.B, s.H});
  const auto len = check_lengths(lengths, s.T, s.B);
  const int64_t T = s.T, B = s.B, H = s.H;

  // Input projection of all steps at once, both biases folded in: (T*B, 4H).
  at::Tensor bias;
  if (b_ih.has_value() && b_ih->defined()) bias = b_ih->clone();
  if (b_hh.has_value() && b_hh->defined()) bias = bias.defined() ? bias.add_(*b_hh) : *b_hh;
  at::Tensor xw = gemm_nt(x.reshape({T * B, s.I}), w_ih, bias).view({T, B, 4 * H});

  at::Tensor h = h0.clone(), c = c0.clone(), n = n0.clone(), m = m0.clone();
  at::Tensor out = at::empty({T, B, H}, x.options());
  at::Tensor acts = at::empty({T, B, 4 * H}, x.options());
  at::Tensor cells = at::empty({T, B, H}, x.options());
  at::Tensor norms = at::empty({T, B, H}, x.options());
  at::Tensor stabs = at::empty({T, B, H}, x.options());
  at::Tensor dlog = at::empty({T, B, 2 * H}, x.options());
  StepBuffers buf{at::empty({B, 4 * H}, x.options()), at::empty({B, 2 * H}, x.options()),
                  at::empty({B, H}, x.options()), at::empty({B, 2 * H}, x.options())};

  AT_DISPATCH_FLOATING_TYPES(dtype, "slstm_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor pre = gemm_nt(h, w_hh).add_(xw[t]);  // (B, 4H): + x_t W_ih^T + b
      forward_step<scalar_t>(t, s, len, flags, pre, buf, h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                             n.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), acts.data_ptr<scalar_t>(),
                             cells.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(),
                             stabs.data_ptr<scalar_t>(), dlog.data_ptr<scalar_t>());
    }
  });
  return {out, h, c, n, m, acts, cells, norms, stabs, dlog};
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
      const T* a = acts + row * 4;
      const T* dl = dlog + row * 2;
      const T* c_prev = t > 0 ? cells + row - B * H : c0 + b * H;
      const T* n_prev = t > 0 ? norms + row - B * H : n0 + b * H;
      const T* g_out = d_out ? d_out + row : nullptr;
      T* dhb = dh + b * H;
      T* dcb = dc + b * H;
      T* dnb = dn + b * H;
      for (int64_t j = 0; j < H; ++j) {
        const T i = a[j], f = a[H + j], z = a[2 * H + j], o = a[3 * H + j];
        const T c = cells[row + j], n = norms[row + j];
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
  });
}

// Gradients of slstm_forward's out, h_n, c_n, n_n (each may be undefined) at fixed m.
// Returns dx (empty unless need_dx), dh0, dc0, dn0, dW_ih, dR, db (for b_ih and b_hh).
std::vector<at::Tensor> slstm_backward(
    const c10::optional<at::Tensor>& d_out, const c10::optional<at::Tensor>& d_hn,
    const c10::optional<at::Tensor>& d_cn, const c10::optional<at::Tensor>& d_nn,
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& n0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& out,
    const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& norms,
    const at::Tensor& dlog, const c10::optional<at::Tensor>& lengths, bool need_dx) {
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
  const at::Tensor r_t = w_hh.t().contiguous();  // (H, 4H): dh_{t-1} = dpre_t R

  AT_DISPATCH_FLOATING_TYPES(dtype, "slstm_backward", [&] {
    const scalar_t* go = g_out.defined() ? g_out.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      backward_step<scalar_t>(t, s, len, go, acts.data_ptr<scalar_t>(),
                              cells.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(),
                              dlog.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                              n0.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
                              dc.data_ptr<scalar_t>(), dn.data_ptr<scalar_t>(),
                              dpre.data_ptr<scalar_t>());
      const at::Tensor dh_rec = gemm_nt(dpre[t], r_t);  // (B, H) = dpre_t R
      scalar_t* dhp = dh.data_ptr<scalar_t>();
      const scalar_t* rec = dh_rec.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        if (t < len[b]) std::copy(rec + b * H, rec + (b + 1) * H, dhp + b * H);
      }
    }
  });

  const at::Tensor dp = dpre.view({T * B, 4 * H});
  // h_{t-1} of every step: h0, then the outputs (a padded step's dpre is zero).
  const at::Tensor h_prev = at::cat({h0.unsqueeze(0), out.narrow(0, 0, T - 1)}, 0);
  const at::Tensor dp_t = dp.t().contiguous();  // (4H, T*B)
  at::Tensor dw_hh = gemm_nt(dp_t, h_prev.view({T * B, H}).t().contiguous());
  at::Tensor dw_ih = gemm_nt(dp_t, x.reshape({T * B, s.I}).t().contiguous());
  at::Tensor db = dp.sum(0);
  at::Tensor dx = need_dx ? gemm_nt(dp, w_ih.t().contiguous()).view({T, B, s.I})
                          : at::empty({0}, x.options());
  return {dx, dh, dc, dn, dw_ih, dw_hh, db};
}

}  // namespace

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("slstm_forward", &slstm_forward);
  m.def("slstm_backward", &slstm_backward);
}
