// lstm_math.h: scalar math (exp, sigmoid, tanh), activations, row moments, Spec
// Part of the fused LSTM extension (included by fused_lstm.cpp: one translation unit, so
// that the compiled code is the same as when this was one file); the sLSTM extension
// (slstm.cpp) includes it too, for the same vectorised exp / sigmoid / tanh.
#pragma once

#include "common.h"

namespace {

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

// y += u * v, element-wise: the peephole terms of both steps.
template <typename T>
GL_INLINE void add_mul(T* __restrict y, const T* __restrict u, const T* __restrict v,
                       int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += u[j] * v[j];
}

// Row reductions in double with 32 independent partial sums, four vectors of 8 doubles
// (element j goes to lane j % 8 of vector (j / 8) % 4 while 32 remain, then of the first;
// the four are added pairwise, then the tail and the lanes in order). Without -ffast-math
// the compiler may not reorder one running sum, so a single accumulator is a serial chain
// (one add's latency, 4 cycles, per element: the layer norms' row statistics took 2-3x the
// standard step's whole pointwise pass, issue 16); one vector of 8 still waited 4 cycles
// per 8 elements, four let four adds be under way at once.
// Written as arrays of 8, GCC 12 left the lanes scalar (vcvtss2sd / vfmadd231sd on one
// double at a time: the backward's ln_dots was a third of the after-loop phase at B = 64
// on a Xeon); as GCC vectors they are AVX-512 (or two AVX2) operations with the same
// order of additions. The result depends on n and on the CPU's clone (whether a * b + c
// is contracted to one FMA), never on alignment or threads.
typedef double D8 __attribute__((vector_size(64)));

// x[0..8) as doubles.
template <typename T>
GL_INLINE D8 load_d8(const T* x) {
  if constexpr (std::is_same<T, float>::value) {
    typedef float F8 __attribute__((vector_size(32)));
    F8 f;
    __builtin_memcpy(&f, x, sizeof(F8));
    return __builtin_convertvector(f, D8);
  } else {
    D8 d;
    __builtin_memcpy(&d, x, sizeof(D8));
    return d;
  }
}

GL_INLINE double lanes_sum(double s, const D8& acc) {
  for (int k = 0; k < 8; ++k) s += acc[k];
  return s;
}

template <typename T>
GL_INLINE double sum_d(const T* __restrict x, int64_t n) {
  D8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    a0 += load_d8(x + j);
    a1 += load_d8(x + j + 8);
    a2 += load_d8(x + j + 16);
    a3 += load_d8(x + j + 24);
  }
  for (; j + 8 <= n; j += 8) a0 += load_d8(x + j);
  double s = 0;
  for (; j < n; ++j) s += double(x[j]);
  return lanes_sum(s, (a0 + a1) + (a2 + a3));
}

// sum_j (x[j] - m)^2 in double (the two-pass variance: no cancellation when |m| >> std).
template <typename T>
GL_INLINE double sq_dev_d(const T* __restrict x, int64_t n, double m) {
  D8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const D8 d0 = load_d8(x + j) - m, d1 = load_d8(x + j + 8) - m;
    const D8 d2 = load_d8(x + j + 16) - m, d3 = load_d8(x + j + 24) - m;
    a0 += d0 * d0;
    a1 += d1 * d1;
    a2 += d2 * d2;
    a3 += d3 * d3;
  }
  for (; j + 8 <= n; j += 8) {
    const D8 d = load_d8(x + j) - m;
    a0 += d * d;
  }
  double s = 0;
  for (; j < n; ++j) {
    const double d = double(x[j]) - m;
    s += d * d;
  }
  return lanes_sum(s, (a0 + a1) + (a2 + a3));
}

// s1 = sum_j dy[j] w[j], s2 = sum_j dy[j] w[j] xhat[j], in double (layer norm backward).
// Two vectors per sum here (element j to vector (j / 8) % 2 while 16 remain): four sums of
// four would be 16 of AVX2's 16 registers (a D8 is two of them) before any temporary.
template <typename T>
GL_INLINE void ln_dots(const T* __restrict dy, const T* __restrict w, const T* __restrict xhat,
                       int64_t n, double* s1, double* s2) {
  D8 p0 = {}, p1 = {}, q0 = {}, q1 = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const D8 g0 = load_d8(dy + j) * load_d8(w + j);
    const D8 g1 = load_d8(dy + j + 8) * load_d8(w + j + 8);
    p0 += g0;
    p1 += g1;
    q0 += g0 * load_d8(xhat + j);
    q1 += g1 * load_d8(xhat + j + 8);
  }
  for (; j + 8 <= n; j += 8) {
    const D8 g = load_d8(dy + j) * load_d8(w + j);
    p0 += g;
    q0 += g * load_d8(xhat + j);
  }
  double a = 0, b = 0;
  for (; j < n; ++j) {
    const double g = double(dy[j]) * double(w[j]);
    a += g;
    b += g * double(xhat[j]);
  }
  *s1 = lanes_sum(a, p0 + p1);
  *s2 = lanes_sum(b, q0 + q1);
}

// Row mean and 1/sqrt(var + eps) (biased variance, as torch.nn.functional.layer_norm),
// rounded to T: the forward normalises with these T values and the backward recomputes them
// the same way from the same row, so both see the same xhat to the bit.
template <typename T>
GL_INLINE void row_moments(const T* __restrict x, int64_t n, double eps, T* mean, T* rstd) {
  const double m = sum_d(x, n) / double(n);
  *mean = T(m);
  *rstd = T(1.0 / std::sqrt(sq_dev_d(x, n, m) / double(n) + eps));
}

// Layer norm backward of one row of n, from the forward's xhat and rstd and the weight w:
// dx = rstd (dy w - mean(dy w) - xhat mean(dy w xhat)). dx may be dy (in place).
template <typename T>
GL_INLINE void ln_grad_row(T* dx, const T* dy, const T* __restrict w, const T* __restrict xhat,
                           T rstd, int64_t n) {
  double s1, s2;
  ln_dots(dy, w, xhat, n, &s1, &s2);
  const T mm1 = T(s1 / double(n)), mm2 = T(s2 / double(n));
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * (dy[j] * w[j] - mm1 - xhat[j] * mm2);
}

// ln_grad_row (dx apart from dy), with the row's terms of the layer norm's weight and bias
// gradients added into aw and ab (dy xhat and dy, in double): the parameter reductions
// while the row is in cache, instead of a pass over (T*B, n) after the loop.
template <typename T>
GL_INLINE void ln_grad_row_acc(T* __restrict dx, const T* __restrict dy, const T* __restrict w,
                               const T* __restrict xhat, T rstd, int64_t n,
                               double* __restrict aw, double* __restrict ab) {
  for (int64_t j = 0; j < n; ++j) {
    aw[j] += double(dy[j]) * double(xhat[j]);
    ab[j] += double(dy[j]);
  }
  ln_grad_row(dx, dy, w, xhat, rstd, n);
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

}  // namespace
