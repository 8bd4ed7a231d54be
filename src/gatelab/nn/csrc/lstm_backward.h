// lstm_backward.h: the backward driver over T steps
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "lstm_step.h"

namespace {

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

// dh[b0:b1, j0:j1] += sum over the nblk partial products (each (B, ld)), in block order.
template <typename T>
void add_partials(const T* part, int64_t nblk, int64_t B, int64_t ld, T* dh, int64_t j0,
                  int64_t j1, int64_t b0, int64_t b1) {
  for (int64_t r = 0; r < nblk; ++r)
    for (int64_t b = b0; b < b1; ++b) {
      const T* src = part + (r * B + b) * ld;
      T* dst = dh + b * ld;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
}

// Rows [r0, r1) of the recurrent layer norm's backward: d (r - dr0) = LN'(g r), the
// vectorised clones of ln_grad_row (the backward step's own code for the same rows).
template <typename T>
GL_CLONES void ln_grad_rows(T* d, int64_t dr0, const T* g, const T* w, const T* xhat,
                            const T* rstd, int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    ln_grad_row(d + (r - dr0) * n, g + r * n, w, xhat + r * n, rstd[r], n);
}

// One row of the input layer norm's backward: xr holds the raw x W_ih^T row in and
// dy * xhat out (for d ln_ih_weight); dy holds d LN output in and d (x W_ih^T) out.
template <typename T>
GL_CLONES void ln_input_row(T* __restrict dy, T* __restrict xr, const T* __restrict w, T mean,
                            T rstd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) xr[j] = (xr[j] - mean) * rstd;  // as the forward's xhat
  double s1, s2;
  ln_dots(dy, w, xr, n, &s1, &s2);
  const T mm1 = T(s1 / double(n)), mm2 = T(s2 / double(n));
  for (int64_t j = 0; j < n; ++j) {
    const T xh = xr[j], d = dy[j];
    xr[j] = d * xh;
    dy[j] = rstd * (d * w[j] - mm1 - xh * mm2);
  }
}

// acc[j] += sum_r a[r, j] over R rows of C columns (double accumulators, parallel over
// column blocks): a column sum continued over blocks of rows.
template <typename T>
void col_sum_acc(const T* a, int64_t lda, int64_t R, int64_t C, double* acc) {
  constexpr int64_t CB = 256;
  const int64_t tasks = (C + CB - 1) / CB;
  const int64_t grain = R * C >= (1 << 16) ? 1 : tasks;
  at::parallel_for(0, tasks, grain, [&](int64_t q0, int64_t q1) {
    double part[CB];
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t j0 = q * CB, j1 = std::min(C, j0 + CB);
      col_dot_block<T>(a, lda, nullptr, 0, R, j0, j1, part);
      for (int64_t j = j0; j < j1; ++j) acc[j] += part[j - j0];
    }
  });
}

// Rows per block of the layer norm's after-loop passes, whose scratch is a block of rows
// per thread (ln_dw_hh: d (h W_hh^T) and packed h_{t-1}; ln_input_backward: x W_ih^T;
// ln_after_blocks: both in turn) instead of a (T*B, GH) buffer. Up to 256 rows: one
// block (the forward's own GEMM call; gemv_nt below kPackRows). Above: about
// T*B / (8 threads) rows, a multiple of 32 from 64 to 256, so that all threads' blocks
// together hold about an eighth of dG's rows (issue 16: 256 rows per thread were 1 MB of
// the B = 8 peak, 16% of torch's whole step); 256 is the own GEMM's K chunk (float32),
// past which a block gains nothing.
inline int64_t ln_block_rows(int64_t TB, int64_t threads) {
  if (TB <= 256) return TB;
  const int64_t per = 8 * std::max<int64_t>(1, threads), rows = (TB + per - 1) / per;
  return std::clamp<int64_t>((rows + 31) / 32 * 32, 64, 256);
}

// Whether the T*B rows make a block for every thread (a run of blocks per thread).
inline bool ln_blocks_enough(int64_t TB, int64_t threads) {
  const int64_t KB = ln_block_rows(TB, threads);
  return (TB + KB - 1) / KB >= threads;
}

// The blocks [0, nb) in ONE parallel region (par) or serially: each thread takes a run of
// blocks and works in its own scratch slot, its thread number (ATen's OpenMP split gives
// thread k the k-th run: the same blocks per slot in every call with that thread count).
// One region instead of a few per block: on a shared machine each region's start waits
// for the other thread to be scheduled, which cost more than the blocks' work (issue 16).
template <typename F>
void over_blocks(int64_t nb, int64_t slots, bool par, const F& fn) {
  if (!par || slots == 1) return fn(0, nb, 0);
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    const int64_t slot = at::get_thread_num();
    TORCH_CHECK(slot >= 0 && slot < slots, "over_blocks: thread ", slot, " of ", slots);
    fn(b0, b1, slot);
  });
}

// A (rows, cols) sum accumulated by thread slots (over_blocks): slot 0 into the result
// itself, the others into partials added to it at the end (issue 16: a (slots, rows, cols)
// buffer and its sum were two dW_hh more at the peak).
template <typename T>
struct SlotSums {
  Tensor sum, part;
  SlotSums(int64_t slots, int64_t rows, int64_t cols, const at::TensorOptions& opts)
      : sum(at::zeros({rows, cols}, opts)),
        part(slots > 1 ? at::zeros({slots - 1, rows, cols}, opts) : Tensor()) {}
  T* ptr(int64_t slot) {
    return slot == 0 ? sum.data_ptr<T>() : part.data_ptr<T>() + (slot - 1) * sum.numel();
  }
  Tensor total() {  // = the slots' sum, in slot order
    for (int64_t k = 0; part.defined() && k < part.size(0); ++k) sum.add_(part[k]);
    part = Tensor();
    return sum;
  }
};

// Rows [k0, k1) of h_{t-1} (h0 for the first B rows, then h_feed (T, B, P)) packed into
// panels of kb = k1 - k0 rows at dst.
template <typename T>
void pack_h_prev(const Tensor& h0, const Tensor& h_feed, int64_t B, int64_t P, int64_t k0,
                 int64_t k1, T* dst) {
  const int64_t kb = k1 - k0;
  if (k0 < B) pack_rows<T>(h0.data_ptr<T>() + k0 * P, P, std::min(k1, B) - k0, 0, kb, P, dst);
  if (k1 > B) {
    const int64_t s0 = std::max(k0, B);
    pack_rows<T>(h_feed.data_ptr<T>() + (s0 - B) * P, P, k1 - s0, s0 - k0, kb, P, dst);
  }
}

// dW_hh = sum_t dHW_t^T h_{t-1} with layer norm: dHW (d (h_{t-1} W_hh^T), through the
// recurrent layer norm) is not kept from the loop but recomputed from dG and xhat_hh block
// by block (the same ln_grad_row on the same values: the loop's bits), each block's
// product added into its thread's partial dW_hh. h_{t-1}: h0 for the first B rows, then
// h_feed (T, B, P).
template <typename T>
Tensor ln_dw_hh(const Tensor& dG, const Tensor& xhat_hh, const Tensor& rstd_hh,
                const Tensor& w_ln, const Tensor& h0, const Tensor& h_feed, int64_t T_,
                int64_t B, int64_t P, bool own) {
  const int64_t TB = T_ * B, GH = dG.size(2), PW = kPanel<T>, Pp = (P + PW - 1) / PW * PW;
  const auto opts = dG.options();
  const int64_t KB = ln_block_rows(TB, at::get_num_threads()), nb = (TB + KB - 1) / KB;
  // A run of blocks per thread when there are blocks enough for every thread; with fewer
  // (T*B small, many threads) the blocks one after the other, each product parallel over
  // GH (big_gemm), so that no thread idles.
  const bool per_thread = own && nb >= at::get_num_threads();
  const int64_t slots = per_thread ? std::max<int64_t>(1, std::min(nb, int64_t(at::get_num_threads()))) : 1;
  const int64_t ldw = own ? Pp : P;
  Tensor dhw = at::empty({slots, KB, GH}, opts);
  Tensor hp = own ? at::empty({slots, Pp * KB}, opts) : Tensor();
  SlotSums<T> dw(slots, GH, ldw, opts);
  Tensor h_prev;  // (TB, P), for at::mm only
  if (!own) h_prev = at::cat({h0.unsqueeze(0), h_feed.narrow(0, 0, T_ - 1)}).view({TB, P});
  const T *g = dG.data_ptr<T>(), *xh = xhat_hh.data_ptr<T>(), *rs = rstd_hh.data_ptr<T>();
  const T* w = w_ln.data_ptr<T>();
  over_blocks(nb, slots, per_thread, [&](int64_t b0, int64_t b1, int64_t slot) {
    T* d = dhw.data_ptr<T>() + slot * KB * GH;
    T* dws = dw.ptr(slot);
    // the transposed copy of a block's d (h W_hh^T): kGemmMC rows of one K chunk
    std::vector<T> apack(per_thread ? kGemmMC * std::min<int64_t>(KB, 1024 / sizeof(T)) : 0);
    for (int64_t q = b0; q < b1; ++q) {
      const int64_t k0 = q * KB, k1 = std::min(TB, k0 + KB), kb = k1 - k0;
      if (!own) {
        // blocks one after the other: the rows of each in parallel (they are independent;
        // serial, they were a third of the after-loop phase at B = 64 on a Xeon), then
        // at::mm, itself parallel
        at::parallel_for(k0, k1, 16, [&](int64_t r0, int64_t r1) {
          ln_grad_rows<T>(d, k0, g, w, xh, rs, GH, r0, r1);
        });
        dw.sum.addmm_(dhw[0].narrow(0, 0, kb).t(), h_prev.narrow(0, k0, kb));
        continue;
      }
      ln_grad_rows<T>(d, k0, g, w, xh, rs, GH, k0, k1);
      T* hpp = hp.data_ptr<T>() + slot * Pp * KB;
      pack_h_prev<T>(h0, h_feed, B, P, k0, k1, hpp);
      if (per_thread) {
        gemm_block<T>(0, GH, kb, d, 1, GH, hpp, dws, Pp, 0, Pp, /*acc=*/true, nullptr,
                      apack.data());
      } else {
        big_gemm<T>(GH, kb, P, d, 1, GH, hpp, dws, Pp, nullptr, /*acc=*/true);
      }
    }
  });
  dhw = hp = Tensor();
  const Tensor sum = dw.total();
  return own ? sum.narrow(1, 0, P) : sum;
}

// Rows [k0, k1) of the input layer norm's backward, in place in g (T*B, GH): the raw
// x W_ih^T recomputed into xr (a block of rows), normalised as the forward did, and
// d ln_ih_weight's sums added into gw (GH doubles). The rows in parallel when called
// outside a parallel region (inside one, at::parallel_for runs inline).
template <typename T>
void ln_input_block(const LnInputGemm<T>& gi, T* g, T* xr, const T* w, const T* m,
                    const T* rs, int64_t GH, int64_t k0, int64_t k1, double* gw) {
  gi.run(k0, k1, xr);
  at::parallel_for(k0, k1, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      ln_input_row<T>(g + r * GH, xr + (r - k0) * GH, w, m[r], rs[r], GH);
  });
  col_sum_acc<T>(xr, GH, k1 - k0, GH, gw);  // dy * xhat
}

// The input layer norm's backward, in place: dG (T*B, GH) becomes d (x W_ih^T), the raw
// projection's gradient. x W_ih^T is recomputed block by block (LnInputGemm, the forward's
// GEMM) and normalised with the forward's mean_ih / rstd_ih, so that xhat is the forward's
// (to the bit on the own GEMM; LnInputGemm says why not quite on at::mm); nothing of size (T*B, GH) is kept or allocated for it (issue 16: it was
// xw_raw, and ATen's native_layer_norm_backward with its own output). Returns d ln_ih_weight.
template <typename T>
Tensor ln_input_backward(Tensor& dG, const Tensor& x, const Tensor& w_ih, const Tensor& mean_ih,
                         const Tensor& rstd_ih, const Tensor& w_ln) {
  const int64_t GH = w_ih.size(0), TB = x.size(0) * x.size(1);
  const LnInputGemm<T> gi(x, w_ih, TB);
  const int64_t KB = ln_block_rows(TB, at::get_num_threads()), nb = (TB + KB - 1) / KB;
  // A run of blocks per thread on the own GEMM (at::mm is not called inside a region) when
  // there are blocks enough for every thread; else one block after the other, each GEMM
  // parallel inside (as ln_dw_hh).
  const bool par = gi.g.has_value() && nb >= at::get_num_threads();
  const int64_t slots = par ? std::max<int64_t>(1, std::min(nb, int64_t(at::get_num_threads()))) : 1;
  Tensor raw = at::empty({slots, KB, GH}, dG.options());
  Tensor gw = at::zeros({slots, GH}, dG.options().dtype(at::kDouble));
  T* g = dG.data_ptr<T>();
  const T *m = mean_ih.data_ptr<T>(), *rs = rstd_ih.data_ptr<T>(), *w = w_ln.data_ptr<T>();
  over_blocks(nb, slots, par, [&](int64_t b0, int64_t b1, int64_t slot) {
    T* xr = raw.data_ptr<T>() + slot * KB * GH;
    for (int64_t q = b0; q < b1; ++q)
      ln_input_block<T>(gi, g, xr, w, m, rs, GH, q * KB, std::min(TB, q * KB + KB),
                        gw.data_ptr<double>() + slot * GH);
  });
  return gw.sum(0).to(dG.scalar_type());
}

// Layer norm's whole after-loop in one pass over blocks of the T*B rows, a run of blocks
// per thread, where every product takes the own GEMM (backward_impl decides): each block
// of dG is read from memory once, its products reading it while it is in cache (issue 16:
// the separate passes of ln_dw_hh, ln_input_backward, dx and dW_ih each read all of dG,
// several MB). The price: each thread's dW_ih partial (GH x I) and dx, with W_ih packed,
// are alive together with the dW_hh partials, where the separate passes held them one
// after the other (at 2 threads the layer-norm step's peak stayed at most 1.08x torch's,
// BENCHMARKS.md "Session 15"; many threads hold more partials). Per block: d (h W_hh^T)
// and its dW_hh partial, as ln_dw_hh (the same bits); dG becomes d (x W_ih^T) in place,
// as ln_input_backward; then the block's dW_ih partial and its rows of dx. Fills g[0]
// (when need_dx), dW_hh, dW_ih and d ln_ih_weight, and returns true; false (nothing
// done) where x W_ih^T is not recomputed by the own GEMM.
template <typename T>
bool ln_after_blocks(std::vector<Tensor>& g, Tensor& dG, const Tensor& x, const Tensor& w_ih,
                     const Tensor& xhat_hh, const Tensor& rstd_hh, const Tensor& mean_ih,
                     const Tensor& rstd_ih, const Tensor& w_ln_hh, const Tensor& w_ln_ih,
                     const Tensor& h0, const Tensor& h_feed, int64_t T_, int64_t B, bool need_dx) {
  constexpr int64_t PW = kPanel<T>;
  const int64_t TB = T_ * B, GH = dG.size(2), I = w_ih.size(1), P = h0.size(1);
  const int64_t Ip = (I + PW - 1) / PW * PW, Pp = (P + PW - 1) / PW * PW;
  const auto opts = dG.options();
  const LnInputGemm<T> gi(x, w_ih, TB);
  if (!gi.g || !gi.g->own()) return false;  // at::mm is not called inside a region
  const int64_t KB = ln_block_rows(TB, at::get_num_threads()), nb = (TB + KB - 1) / KB;
  const int64_t slots = std::max<int64_t>(1, std::min(nb, int64_t(at::get_num_threads())));
  // per slot: one block of scratch (d (h W_hh^T), then the raw x W_ih^T) and one of packed
  // rows (h_{t-1}, then x)
  Tensor scratch = at::empty({slots, KB, GH}, opts);
  Tensor rows = at::empty({slots, std::max(Ip, Pp) * KB}, opts);
  SlotSums<T> dwh(slots, GH, Pp, opts), dwi(slots, GH, Ip, opts);
  Tensor gw = at::zeros({slots, GH}, opts.dtype(at::kDouble));
  Tensor wp, dx;
  if (need_dx) {
    wp = at::empty({Ip * GH}, opts);
    pack_rows<T>(w_ih.data_ptr<T>(), I, GH, 0, GH, I, wp.data_ptr<T>());
    dx = at::empty({TB, Ip}, opts);
  }
  T* gp = dG.data_ptr<T>();
  const T *xh = xhat_hh.data_ptr<T>(), *rh = rstd_hh.data_ptr<T>(), *wh = w_ln_hh.data_ptr<T>();
  const T *mi = mean_ih.data_ptr<T>(), *ri = rstd_ih.data_ptr<T>(), *wi = w_ln_ih.data_ptr<T>();
  const T* xs = x.data_ptr<T>();
  over_blocks(nb, slots, true, [&](int64_t b0, int64_t b1, int64_t slot) {
    T* sc = scratch.data_ptr<T>() + slot * KB * GH;
    T* rp = rows.data_ptr<T>() + slot * std::max(Ip, Pp) * KB;
    T *dws_h = dwh.ptr(slot), *dws_i = dwi.ptr(slot);
    std::vector<T> apack(kGemmMC * std::min<int64_t>(KB, 1024 / sizeof(T)));
    for (int64_t q = b0; q < b1; ++q) {
      const int64_t k0 = q * KB, k1 = std::min(TB, k0 + KB), kb = k1 - k0;
      T* gb = gp + k0 * GH;  // this block of dG
      // the recurrent side: d (h W_hh^T) into the scratch, times h_{t-1} into dW_hh
      ln_grad_rows<T>(sc, k0, gp, wh, xh, rh, GH, k0, k1);
      pack_h_prev<T>(h0, h_feed, B, P, k0, k1, rp);
      gemm_block<T>(0, GH, kb, sc, 1, GH, rp, dws_h, Pp, 0, Pp, /*acc=*/true, nullptr,
                    apack.data());
      // the input side: the raw x W_ih^T into the scratch, dG's rows through the input
      // layer norm in place, then x into dW_ih and W_ih into dx
      ln_input_block<T>(gi, gp, sc, wi, mi, ri, GH, k0, k1, gw.data_ptr<double>() + slot * GH);
      pack_rows<T>(xs + k0 * I, I, kb, 0, kb, I, rp);
      gemm_block<T>(0, GH, kb, gb, 1, GH, rp, dws_i, Ip, 0, Ip, /*acc=*/true, nullptr,
                    apack.data());
      if (need_dx)
        gemm_block<T>(0, kb, GH, gb, GH, 1, wp.template data_ptr<T>(),
                      dx.template data_ptr<T>() + k0 * Ip, Ip, 0, Ip, /*acc=*/false, nullptr,
                      nullptr);
    }
  });
  scratch = rows = wp = Tensor();
  const Tensor sum_h = dwh.total(), sum_i = dwi.total();
  g[3 + kWhh] = Pp == P ? sum_h : sum_h.narrow(1, 0, P);
  g[3 + kWih] = Ip == I ? sum_i : sum_i.narrow(1, 0, I);
  g[3 + kLnIhW] = gw.sum(0).to(dG.scalar_type());
  if (need_dx) g[0] = Ip == I ? dx.view({T_, B, I}) : dx.view({T_, B, Ip}).narrow(2, 0, I);
  return true;
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
  const DriverInputs d(x_, p, lengths, flags);
  const auto& [s, x, w_ih, w_hh, len_c, len, T_, B, I, GH, H, P, proj, opts] = d;
  const Tensor &out = saved[0], &acts = saved[3], &c_all = saved[4], &y_all = saved[5],
               &hr_all = saved[6], &mean_ih = saved[7], &rstd_ih = saved[8],
               &xhat_hh = saved[9], &rstd_hh = saved[10];

  // d out[t] row b at dout + t * dout_st + b * dout_sb: contiguous, or one row for all (t, b)
  // when it is one row broadcast (the gradient of out.sum() or out.mean() is an expanded
  // scalar: no (T, B, P) copy of it, issue 16)
  Tensor dout;
  int64_t dout_st = B * P, dout_sb = P;
  if (dout_.has_value() && dout_->defined()) {
    if (dout_->stride(0) == 0 && dout_->stride(1) == 0) {
      dout = dout_->select(0, 0).select(0, 0).contiguous();
      dout_st = dout_sb = 0;
    } else {
      dout = dout_->contiguous();
    }
  }
  Tensor dc = (dcn_.has_value() && dcn_->defined()) ? dcn_->contiguous().clone()
                                                     : at::zeros({B, H}, opts);
  Tensor dG = at::empty({T_, B, GH}, opts);
  // layer norm: d (h_{t-1} W_hh^T) of one step, which the step's GEMM reads (ln_dw_hh
  // recomputes it after the loop), and the ln_c parameters' gradients summed per row over
  // the steps: nothing of size (T, B, .) besides dG (issue 16: were dHW and dCN)
  Tensor dHW = s.ln ? at::empty({B, GH}, opts) : dG;
  Tensor acc_c = s.ln ? at::zeros({2, B, H}, opts.dtype(at::kDouble)) : Tensor();
  Tensor acc_hh = s.ln ? at::zeros({2, B, GH}, opts.dtype(at::kDouble)) : Tensor();
  // no layer norm: the bias gradient summed per row in the loop (bwd_rows), in double (a
  // float32 sum over T*B rows lost 70x in precision at T = 2000: 6e-6 relative against 9e-8)
  const bool has_bias = p[kBih].has_value() || p[kBhh].has_value();
  Tensor acc_b = has_bias && !s.ln ? at::zeros({B, GH}, opts.dtype(at::kDouble)) : Tensor();
  Tensor dH_all = proj ? at::empty({T_, B, P}, opts) : Tensor();
  Tensor tmp = at::empty({B, H}, opts), tmp2 = at::empty({B, H}, opts);
  Tensor w_hr = proj ? p[kWhr]->contiguous() : Tensor();

  std::optional<WeightGemm<T>> g_hh_;  // released after the loop (peak memory)
  g_hh_.emplace(w_hh, B, /*nt=*/false, T_, 1, recurrent_mode<T>(w_hh, B, false, T_));
  WeightGemm<T>& g_hh = *g_hh_;
  std::optional<WeightGemm<T>> g_hr;
  if (proj) g_hr.emplace(w_hr, B, /*nt=*/false, T_, 1, recurrent_mode<T>(w_hr, B, false, T_));
  // the carry dh (gradient wrt h_{t-1}) is the GEMM's output: row stride dld (padded)
  const int64_t dld = g_hh.ldc();
  Tensor dh = at::zeros({B, dld}, opts);
  if (dhn.has_value() && dhn->defined()) dh.narrow(1, 0, P).copy_(*dhn);
  Tensor dhr = proj ? at::empty({B, g_hr->ldc()}, opts) : Tensor();

  BwdStep<T> a(d, p);
  a.ln_c_w = ptr_or_null<T>(p[kLnCW]);
  a.ln_hh_w = ptr_or_null<T>(p[kLnHhW]);
  if (s.ln) {
    a.acc_cw = acc_c.data_ptr<double>();
    a.acc_cb = a.acc_cw + B * H;
    a.acc_hw = acc_hh.data_ptr<double>();
    a.acc_hb = a.acc_hw + B * GH;
    a.dHW = dHW.data_ptr<T>();
  }
  if (acc_b.defined()) a.acc_bias = acc_b.data_ptr<double>();
  a.dc = dc.data_ptr<T>();
  a.tmp = tmp.data_ptr<T>();
  a.tmp2 = tmp2.data_ptr<T>();
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

  // Layer norm or projection: the batch rows are split over tasks (see forward_impl); a
  // fused step may be split so too (StepSplit's third form).
  const bool by_rows = g_fused_step && g_hh.own() && (!proj || g_hr->own()) &&
                       row_share(B, threads) > 0;
  const bool row_bstep = !fused_bstep && by_rows;
  const int64_t RB = by_rows ? row_share(B, threads) : B;
  StepSplit adapt(threads > 1 && B * GH * P >= (1 << 17), 1, sizeof(T), B, GH, P, flags, proj,
                  g_hh.mode, fused_bstep && par_bstep && nblk > 1, fused_bstep && by_rows);
  // the partial products of the step before, not yet added into the carry (fused steps)
  const T* pending = nullptr;
  const int64_t nrb = (B + RB - 1) / RB;
  // the projected case: dH_all[t] rows = carry + d out[t] (zero on padded rows)
  auto dh_total = [&](int64_t t, int64_t b0, int64_t b1) {
    T* dht = dH_all.data_ptr<T>() + t * B * P;
    for (int64_t b = b0; b < b1; ++b) {
      if (len == nullptr || t < len[b]) {
        for (int64_t j = 0; j < P; ++j)
          dht[b * P + j] =
              dhp[b * dld + j] + (dout_p ? dout_p[t * dout_st + b * dout_sb + j] : T(0));
        if (len) std::memset(dhp + b * dld, 0, sizeof(T) * P);
      } else {
        std::memset(dht + b * P, 0, sizeof(T) * P);
      }
    }
  };
  // step t's pointers (without projection: the carry and d out[t] too)
  auto point = [&](BwdStep<T>& f, int64_t t) {
    f.t = t;
    f.acts = acts.data_ptr<T>() + t * B * GH;
    f.c_prev = t > 0 ? c_all.data_ptr<T>() + (t - 1) * B * H : c0.data_ptr<T>();
    f.y = y_all.data_ptr<T>() + t * B * H;
    f.dG = dG.data_ptr<T>() + t * B * GH;
    if (s.ln) {
      f.xhat_hh = xhat_hh.data_ptr<T>() + t * B * GH;
      f.rstd_hh = rstd_hh.data_ptr<T>() + t * B;
      f.c_t = c_all.data_ptr<T>() + t * B * H;
    }
    if (!proj) {
      f.dh_in = dhp;
      f.dh_ld = dld;
      f.dout = dout_p ? dout_p + t * dout_st : nullptr;
      f.dout_sb = dout_sb;
      f.dh_zero = len ? dhp : nullptr;
    }
  };
  // the partial products of rows [b0, b1) and hidden block q of step t into `now` (fused)
  auto partial_rows = [&](T* now, int64_t t, int64_t q, int64_t b0, int64_t b1) {
    const int64_t j0 = q * JB, j1 = std::min(H, j0 + JB);
    const T* Wpk = g_hh.packed.template data_ptr<T>();
    const T* dGt = dG.data_ptr<T>() + t * B * GH;
    for (int g = 0; g < s.G; ++g)
      gemm_block<T>(b0, b1, j1 - j0, dGt + g * H + j0, GH, 1, Wpk + (g * H + j0) * PW,
                    now + q * B * dld, dld, 0, dld, g > 0, nullptr, nullptr, GH * PW);
  };
  // rows [b0, b1) of a fused step over batch rows: the partials of the step before (`prev`)
  // added into their carry, their pointwise pass, their partial products into `now`
  auto fused_row_block = [&](const BwdStep<T>& f, const T* prev, T* now, int64_t b0,
                             int64_t b1) {
    if (prev) add_partials(prev, nblk, B, dld, dhp, 0, H, b0, b1);
    for (int64_t b = b0; b < b1; ++b) bwd_rows<T>(f, b, 0, H);
    for (int64_t q = 0; q < nblk; ++q) partial_rows(now, f.t, q, b0, b1);
  };
  // rows [b0, b1) of a layer norm or projection step over rows: their pointwise pass, then
  // their d h_{t-1} from `dhw` (the projection's rows, where there is one, are the caller's)
  auto row_block = [&](const BwdStep<T>& f, const T* dhw, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) bwd_rows<T>(f, b, 0, H);
    gemm_block<T>(b0, b1, GH, dhw, GH, 1, g_hh.packed.template data_ptr<T>(), dhp, dld, 0,
                  dld, beta != T(0), nullptr, nullptr);
  };
  for (int64_t t = T_ - 1; t >= 0; --t) {
    if (fused_bstep && adapt.rows_settled()) {
      // the rest of the sequence in one region, as in forward_impl: each task its rows,
      // step after step (the partials of a row are its own task's), its own pointers
      Tick tk_(kPBwdPoint);
      const int64_t t0 = t;
      const T* prev0 = pending;
      at::parallel_for(0, nrb, 1, [&](int64_t r0, int64_t r1) {
        BwdStep<T> f = a;
        const T* prev = prev0;
        for (int64_t u = t0; u >= 0; --u) {
          point(f, u);
          f.dh_zero = dhp;  // the carry of real rows restarts from the partial products
          T* now = part.data_ptr<T>() + (u & 1) * nblk * B * dld;
          for (int64_t r = r0; r < r1; ++r)
            fused_row_block(f, prev, now, r * RB, std::min(B, r * RB + RB));
          prev = now;
        }
      });
      pending = part.data_ptr<T>();  // step 0's partials (u & 1 == 0)
      break;
    }
    // layer norm (a step over rows without projection): the same; each row's d (h W_hh^T)
    // is in its own row of dHW, written by the same task
    if (row_bstep && !proj && adapt.rows_settled(true)) {
      Tick tk_(kPBwdPoint);
      const int64_t t0 = t;
      at::parallel_for(0, nrb, 1, [&](int64_t r0, int64_t r1) {
        BwdStep<T> f = a;
        for (int64_t u = t0; u >= 0; --u) {
          point(f, u);
          for (int64_t r = r0; r < r1; ++r)
            row_block(f, dHW.data_ptr<T>(), r * RB, std::min(B, r * RB + RB));
        }
      });
      break;
    }
    const bool par = adapt.begin();
    point(a, t);
    const T* dhw_t = s.ln ? dHW.data_ptr<T>() : dG.data_ptr<T>() + t * B * GH;
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
    }
    if (fused_bstep) {
      // The partial products of a block of hidden units, dG[:, its gate rows] W_hh[its
      // gate rows, :] (all columns), are summed into the carry at the start of the next
      // step (both forms compute the same sums in the same order: the same bits).
      // Fused: one task per block adds the partials of the step before into its columns of
      // the carry, runs the pointwise pass on them, then its partial product. Two phases:
      // the partials added and the pointwise pass over rows, then the partial products
      // over blocks. Over rows: one task per block of rows does all three for its rows.
      Tick tk_(kPBwdPoint);
      a.dh_zero = dhp;  // the carry of real rows restarts from the partial products
      T* part_now = part.data_ptr<T>() + (t & 1) * nblk * B * dld;
      const T* part_prev = pending;
      if (par && adapt.rows) {
        at::parallel_for(0, nrb, 1, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r)
            fused_row_block(a, part_prev, part_now, r * RB, std::min(B, r * RB + RB));
        });
      } else if (!adapt.two) {
        auto body = [&](int64_t k0, int64_t k1) {
          for (int64_t q = k0; q < k1; ++q) {
            const int64_t j0 = q * JB, j1 = std::min(H, j0 + JB);
            if (part_prev) add_partials(part_prev, nblk, B, dld, dhp, j0, j1, 0, B);
            for (int64_t b = 0; b < B; ++b) bwd_rows<T>(a, b, j0, j1);
            partial_rows(part_now, t, q, 0, B);
          }
        };
        if (par && par_bstep) {
          at::parallel_for(0, nblk, 1, body);
        } else {
          body(0, nblk);
        }
      } else {
        at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
          if (part_prev) add_partials(part_prev, nblk, B, dld, dhp, 0, H, b0, b1);
          for (int64_t b = b0; b < b1; ++b) bwd_rows<T>(a, b, 0, H);
        });
        at::parallel_for(0, nblk, 1, [&](int64_t q0, int64_t q1) {
          for (int64_t q = q0; q < q1; ++q) partial_rows(part_now, t, q, 0, B);
        });
      }
      pending = part_now;
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
          row_block(a, dhw_t, b0, b1);
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
      g_hh.run(dhw_t, GH, beta, dhp, dld, par);
    }
    adapt.end();
  }
  if (pending) add_partials(pending, nblk, B, dld, dhp, 0, H, 0, B);
  Tick tick_after(kPBwdAfter);
  g_hh_.reset();
  g_hr.reset();
  tmp = tmp2 = dhr = Tensor();
  dout = Tensor();  // a contiguous copy of the caller's (an expanded sum's grad) freed early

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
  const Tensor hr_r = zero_rows(hr_all, padded, proj);
  std::vector<Tensor> g(3 + kNumParams);
  g[1] = dld == P ? dh : dh.narrow(1, 0, P).contiguous();
  g[2] = dc;
  dh = Tensor();
  const int64_t TB = T_ * B;
  auto vec = [&](int64_t n) { return at::empty({n}, opts); };
  // the own kernel or at::mm for the weight gradients: the mode, or the measured choice
  // (gemm_plan.h; never at B = 1; below kPackRows rows the own kernel, as dx and x W_ih^T)
  const bool own_mode = g_gemm_mode == 0 || g_gemm_mode == 4;
  const bool own = own_mode && (dw_own<T>(GH, I, P, opts, T_, B) || TB < kPackRows);
  // no layer norm: dW_ih and dW_hh come from one GEMM (below)
  const bool one_dw = own && !s.ln;
  // reductions of dG (biases, peepholes, recurrent layer norm) before dG may be released;
  // the biases' were summed in the loop (per row, in double)
  if (has_bias || s.ln) {
    Tensor dsum = (s.ln ? acc_hh[1] : acc_b).sum(0).to(x.scalar_type());
    acc_b = Tensor();
    if (p[kBih].has_value()) g[3 + kBih] = dsum;
    if (p[kBhh].has_value()) g[3 + kBhh] = p[kBih].has_value() ? dsum.clone() : dsum;
    if (s.ln) {  // both layer norms' biases: their outputs are summed into the pre-activation
      g[3 + kLnHhB] = has_bias ? dsum.clone() : dsum;
      g[3 + kLnIhB] = dsum.clone();
    }
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
  if (s.ln) {  // the layer norms' weights, summed in the loop (per row, double)
    g[3 + kLnHhW] = acc_hh[0].sum(0).to(x.scalar_type());
    acc_hh = Tensor();
    g[3 + kLnCW] = acc_c[0].sum(0).to(x.scalar_type());  // over the rows, in double
    g[3 + kLnCB] = acc_c[1].sum(0).to(x.scalar_type());
    acc_c = Tensor();
  }
  if (proj) g[3 + kWhr] = at::mm(dH_all.view({TB, P}).t(), hr_r.view({TB, H}));
  dH_all = Tensor();

  auto pad = [&](int64_t n) { return (n + PW - 1) / PW * PW; };
  const int64_t Ip = pad(I), Pp = pad(P);
  // dx = d (x W_ih^T) W_ih: without layer norm dG is final here, and dx goes first, so
  // that its packed W_ih is freed before the weight gradients are allocated (peak memory,
  // issue 16); with layer norm after ln_input_backward (below), or inside ln_after_blocks
  auto input_grad = [&] {
    if (!need_dx) return;
    const T* dxw_p = dG.data_ptr<T>();
    if (own_mode && dx_own<T>(w_ih, T_, B) && TB >= kPackRows) {  // packing pays for enough rows
      Tensor wp = at::empty({Ip * GH}, opts);
      pack_rows<T>(w_ih.data_ptr<T>(), I, GH, 0, GH, I, wp.data_ptr<T>());
      Tensor dx = at::empty({TB, Ip}, opts);
      big_gemm<T>(TB, GH, I, dxw_p, GH, 1, wp.data_ptr<T>(), dx.data_ptr<T>(), Ip, nullptr);
      g[0] = Ip == I ? dx.view({T_, B, I}) : dx.view({T_, B, Ip}).narrow(2, 0, I);
    } else if (own_mode && TB < kPackRows) {  // few rows: W_ih read unpacked, no MKL
      Tensor dx = at::empty({T_, B, I}, opts);
      gemv_nn<T>(TB, GH, 0, I, dxw_p, GH, w_ih.data_ptr<T>(), I, dx.data_ptr<T>(), I, false);
      g[0] = dx;
    } else {
      g[0] = at::mm(dG.view({TB, GH}), w_ih).view({T_, B, I});
    }
  };
  if (!s.ln) input_grad();
  // dW_ih and dW_hh in one GEMM where both read dG (no layer norm): dG^T [x_t, h_{t-1}]
  // over one packed operand (x's panels, then h's), so that dG is read, and copied
  // transposed block by block, once instead of twice (issue 16: the after-loop phase).
  // The GEMM writes x's columns into dW_ih and h's into dW_hh, two tensors contiguous
  // where I and P are multiples of the panel (issue 16: views of one (GH, Ip + Pp) buffer
  // made autograd copy both, a second set of weight gradients alive at the peak).
  if (one_dw) {
    const int64_t N1 = Ip + Pp;
    Tensor xh = at::empty({N1 * TB}, opts);
    T* xp = xh.data_ptr<T>();
    T* hp = xp + Ip * TB;  // h's panels follow x's (panel-major, K = TB rows each)
    pack_rows<T>(x.data_ptr<T>(), I, TB, 0, TB, I, xp);
    pack_rows<T>(h0.data_ptr<T>(), P, B, 0, TB, P, hp);
    if (T_ > 1) pack_rows<T>(h_feed.data_ptr<T>(), P, TB - B, B, TB, P, hp);
    Tensor dwi = at::empty({GH, Ip}, opts), dwh = at::empty({GH, Pp}, opts);
    big_gemm<T>(GH, TB, N1, dG.data_ptr<T>(), 1, GH, xp, dwi.data_ptr<T>(), Ip, nullptr,
                /*acc=*/false, dwh.data_ptr<T>(), Pp, Ip);
    g[3 + kWih] = Ip == I ? dwi : dwi.narrow(1, 0, I);
    g[3 + kWhh] = Pp == P ? dwh : dwh.narrow(1, 0, P);
  }
  // layer norm's after-loop in one pass over blocks (ln_after_blocks) where every product
  // takes the own GEMM and there are blocks enough for every thread
  const bool ln_blocks =
      s.ln && own && TB >= kPackRows &&
      ln_blocks_enough(TB, at::get_num_threads()) &&
      (!need_dx || dx_own<T>(w_ih, T_, B)) &&
      ln_after_blocks<T>(g, dG, x, w_ih, xhat_hh, rstd_hh, mean_ih, rstd_ih, *p[kLnHhW],
                         *p[kLnIhW], h0, h_feed, T_, B, need_dx);
  // dW_hh = sum_t dHW_t^T h_{t-1}, h_{-1} = h0, h_{t-1} = out[t-1] on real steps
  if (s.ln && !ln_blocks) {
    g[3 + kWhh] = ln_dw_hh<T>(dG, xhat_hh, rstd_hh, *p[kLnHhW], h0, h_feed, T_, B, P, own);
  } else if (!s.ln && !own) {
    Tensor dwhh = at::mm(dG.select(0, 0).t(), h0.contiguous());
    if (T_ > 1)
      dwhh.addmm_(dG.narrow(0, 1, T_ - 1).reshape({(T_ - 1) * B, GH}).t(),
                  h_feed.narrow(0, 0, T_ - 1).reshape({(T_ - 1) * B, P}));
    g[3 + kWhh] = dwhh;
  }
  dHW = Tensor();

  // the input side: through the input layer norm, then dx and dW_ih
  if (s.ln && !ln_blocks) {
    g[3 + kLnIhW] = ln_input_backward<T>(dG, x, w_ih, mean_ih, rstd_ih, *p[kLnIhW]);
    input_grad();
  }
  const T* dxw_p = dG.data_ptr<T>();
  const Tensor dxw = dG.view({TB, GH});
  if (own && !one_dw && !ln_blocks) {  // dW_ih = dxw^T x (a sum of TB outer products)
    Tensor xp = at::empty({Ip * TB}, opts);
    pack_rows<T>(x.data_ptr<T>(), I, TB, 0, TB, I, xp.data_ptr<T>());
    Tensor dw = at::empty({GH, Ip}, opts);
    big_gemm<T>(GH, TB, I, dxw_p, 1, GH, xp.data_ptr<T>(), dw.data_ptr<T>(), Ip, nullptr);
    g[3 + kWih] = dw.narrow(1, 0, I);
  } else if (!own) {
    g[3 + kWih] = at::mm(dxw.t(), x.view({TB, I}));
  }
  return g;
}

}  // namespace
