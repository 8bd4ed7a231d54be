// lstm_forward.h: the forward driver over T steps
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "lstm_step.h"

namespace {

// ----------------------------------------------------------------------- forward driver

// Returns [out (T,B,P), h_n (B,P), c_n (B,H), acts (T,B,GH), c_all (T,B,H), y_all (T,B,H),
//          hr_all (T,B,H) | undef, and with layer norm (else undef): mean_ih (T,B),
//          rstd_ih (T,B), xhat_hh (T,B,GH), rstd_hh (T,B)]
// Layer norm keeps one (T, B, GH) buffer besides the gates (xhat_hh): backward recomputes
// x W_ih^T (one GEMM) and LN(c_t) (from c_all) instead of keeping them (issue 16).
// keep: 2 every step of everything (backward needs it), 1 every step of the trace (acts,
// c_all) only, 0 none: buffers not kept hold one step and only states and out mean much.
template <typename T>
std::vector<Tensor> forward_impl(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                                 const std::vector<OptTensor>& p, const OptTensor& lengths,
                                 int64_t flags, int64_t keep) {
  Tick tick_all(kPFwdAll);
  const DriverInputs d(x_, p, lengths, flags);
  const auto& [s, x, w_ih, w_hh, len_c, len, T_, B, I, GH, H, P, proj, opts] = d;
  TORCH_CHECK(h0.size(0) == B && h0.size(1) == P && c0.size(0) == B && c0.size(1) == H,
              "fused_lstm: state shapes do not match");

  // input projection of all steps: one GEMM (+ layer norm), both biases folded in
  Tensor x2 = x.view({T_ * B, I});
  Tensor bias;
  if (p[kBih].has_value()) bias = *p[kBih];
  if (p[kBhh].has_value()) bias = bias.defined() ? bias + *p[kBhh] : *p[kBhh];
  Tensor xw;
  int64_t xw_ld = GH;
  std::optional<Tick> tick_proj(std::in_place, kPFwdProj);
  // own: the own kernel, packed for enough rows (below, the unpacked loops), unless the
  // measured choice (gemm_plan.h; never at B = 1) or the mode gives the product to at::mm.
  // The plan is taken even below kPackRows rows (a short warm-up pays the probe).
  const bool own = g_gemm_mode == 0 || g_gemm_mode == 4;
  const bool big = T_ * B >= kPackRows;
  const bool own_big = !s.ln && own && proj_own<T>(w_ih, T_, B) && big;
  if (own_big) {
    // x W_ih^T + b with the packed GEMM (packing W_ih costs about 32 rows of GEMM, so only
    // for enough rows): xw has padded rows (xw_ld >= GH)
    WeightGemm<T> g_ih(w_ih, T_ * B, /*nt=*/true, /*reuse=*/1000);
    xw_ld = g_ih.ldc();
    xw = at::empty({T_ * B, xw_ld}, opts);
    Tensor bp;
    // padded only when xw has padded columns (ATen's pad is code a B = 1 step ran nowhere
    // else: 100-odd KB of libtorch's pages in its peak RSS, issue 16)
    if (bias.defined())
      bp = xw_ld == GH ? bias.contiguous()
                       : at::constant_pad_nd(bias, {0, xw_ld - GH}, 0).contiguous();
    big_gemm<T>(T_ * B, I, GH, x.data_ptr<T>(), I, 1, g_ih.packed.template data_ptr<T>(),
                xw.data_ptr<T>(), xw_ld, bp.defined() ? bp.data_ptr<T>() : nullptr);
  } else if (!s.ln && ((own && !big) || (g_gemm_mode == 5 && T_ * B <= 4))) {
    xw = at::empty({T_ * B, GH}, opts);
    if (bias.defined()) bias = bias.contiguous();
    gemv_nt<T>(T_ * B, I, GH, x.data_ptr<T>(), I, w_ih.data_ptr<T>(), xw.data_ptr<T>(), GH, false,
               bias.defined() ? bias.data_ptr<T>() : nullptr);
  } else if (s.ln) {
    // the raw x W_ih^T: the step normalises its rows (fwd_rows); backward recomputes it
    xw = at::empty({T_ * B, GH}, opts);
    LnInputGemm<T>(x, w_ih, T_ * B).run(0, T_ * B, xw.data_ptr<T>());
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
  Tensor xhat_hh, rstd_hh, mean_ih, rstd_ih, ln_shift;
  if (s.ln) {
    xhat_hh = at::empty({TKB, B, GH}, opts);
    rstd_hh = at::empty({TKB, B}, opts);
    mean_ih = at::empty({TKB, B}, opts);
    rstd_ih = at::empty({TKB, B}, opts);
    ln_shift = *p[kLnIhB] + *p[kLnHhB];
    if (bias.defined()) ln_shift = ln_shift + bias;
    ln_shift = ln_shift.contiguous();
  }
  Tensor w_hr = proj ? p[kWhr]->contiguous() : Tensor();

  WeightGemm<T> g_hh(w_hh, B, /*nt=*/true, T_, s.G, recurrent_mode<T>(w_hh, B, true, T_, s.G));
  std::optional<WeightGemm<T>> g_hr;
  if (proj) g_hr.emplace(w_hr, B, /*nt=*/true, T_, 1, recurrent_mode<T>(w_hr, B, true, T_));
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

  FwdStep<T> a(d, p);
  a.hw = hw.data_ptr<T>();
  a.hw_ld = g_hh.ldc();
  a.hw_gs = g_hh.col(1);
  a.ln_ih_w = ptr_or_null<T>(p[kLnIhW]);
  a.ln_hh_w = ptr_or_null<T>(p[kLnHhW]);
  a.ln_shift = s.ln ? ln_shift.data_ptr<T>() : nullptr;
  a.ln_c_w = ptr_or_null<T>(p[kLnCW]);
  a.ln_c_b = ptr_or_null<T>(p[kLnCB]);
  a.c = c.data_ptr<T>();
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
  // a task runs the GEMM, the pointwise pass and the projection of its own rows. A fused
  // step may be split so too (StepSplit's third form).
  const bool by_rows = g_fused_step && g_hh.own() && (!proj || g_hr->own()) &&
                       row_share(B, threads) > 0;
  const bool row_step = !fused_step && by_rows;
  const int64_t RB = by_rows ? row_share(B, threads) : B;  // rows per task
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

  StepSplit adapt(threads > 1 && B * GH * P >= (1 << 17), 0, sizeof(T), B, GH, P, flags, proj,
                  g_hh.mode, fused_step && par_step && nblk > 1, fused_step && by_rows);
  // step t's pointers: its rows of the input projection, the buffers it writes, h
  auto point = [&](FwdStep<T>& f, int64_t t, T* hcur, T* hnxt) {
    const int64_t tk = keep >= 1 ? t : 0, tkb = keep >= 2 ? t : 0;
    f.t = t;
    f.xw = xw_p + t * B * xw_ld;
    f.xw_ld = xw_ld;
    f.acts = acts.data_ptr<T>() + (acts_in_xw ? t : tk) * B * GH;
    f.c_out = c_all.data_ptr<T>() + tk * B * H;
    f.y = y_all.data_ptr<T>() + tkb * B * H;
    if (s.ln) {
      f.xhat_hh = xhat_hh.data_ptr<T>() + tkb * B * GH;
      f.rstd_hh = rstd_hh.data_ptr<T>() + tkb * B;
      f.mean_ih = mean_ih.data_ptr<T>() + tkb * B;
      f.rstd_ih = rstd_ih.data_ptr<T>() + tkb * B;
    }
    if (proj) {
      f.hr = hr_all.data_ptr<T>() + tkb * B * H;
      f.hr_ld = H;
      f.h_state = nullptr;
    } else {
      f.hr = out_p + t * B * P;
      f.hr_ld = P;
      f.h_state = hnxt;
      f.h_prev = hcur;
    }
  };
  // rows [b0, b1) of one step over batch rows: their h_{t-1} W_hh^T, then their pointwise
  // pass (the projection's rows, where there is one, are the caller's)
  auto row_block = [&](const FwdStep<T>& f, const T* hcur, int64_t b0, int64_t b1) {
    gemm_block<T>(b0, b1, P, hcur, P, 1, g_hh.packed.template data_ptr<T>(), hw.data_ptr<T>(),
                  g_hh.ldc(), 0, g_hh.ldc(), false, nullptr, nullptr);
    for (int64_t b = b0; b < b1; ++b) fwd_rows<T>(f, b, 0, H);
  };
  for (int64_t t = 0; t < T_; ++t) {
    // (layer norm too; a projection's step still meets: its rows' copy reads the loop's)
    if ((fused_step && adapt.rows_settled()) || (row_step && !proj && adapt.rows_settled(true))) {
      // the rest of the sequence in one region: each task its rows, step after step, with
      // its own copy of the step's pointers (no meeting between steps)
      Tick tk_(kPFwdPoint);
      const int64_t t0 = t;
      at::parallel_for(0, nrb, 1, [&](int64_t r0, int64_t r1) {
        FwdStep<T> f = a;
        T *hc = hptr, *hn = hnext;
        for (int64_t u = t0; u < T_; ++u) {
          point(f, u, hc, hn);
          for (int64_t r = r0; r < r1; ++r)
            row_block(f, hc, r * RB, std::min(B, r * RB + RB));
          std::swap(hc, hn);
        }
      });
      if ((T_ - t0) % 2) std::swap(hptr, hnext);
      break;
    }
    const bool par = adapt.begin();
    const bool rows = row_step || (par && adapt.rows);  // each task its rows' whole step
    // else fused (each task its hidden units), or the GEMM, then the pointwise pass
    const bool fuse = fused_step && !adapt.two && !rows;
    hptr_ = hptr;
    hnext_ = hnext;
    if (!fuse && !rows) {
      Tick tk_(kPFwdGemm);
      g_hh.run(hptr, P, T(0), hw.data_ptr<T>(), g_hh.ldc(), par);
    }
    point(a, t, hptr, hnext);
    if (fuse) {
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
    } else if (rows) {
      Tick tk_(kPFwdPoint);
      auto body = [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b0 = r * RB, b1 = std::min(B, b0 + RB);
          row_block(a, hptr, b0, b1);
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
    if (proj && !rows) {
      g_hr->run(a.hr, H, T(0), hp.data_ptr<T>(), hp_ld, par);
      proj_copy(t, 0, B);
    }
    std::swap(hptr, hnext);
    adapt.end();
  }
  if (hptr != h.data_ptr<T>()) h = h2;
  return {out, h, c, acts, c_all, y_all, hr_all, mean_ih, rstd_ih, xhat_hh, rstd_hh};
}

}  // namespace
