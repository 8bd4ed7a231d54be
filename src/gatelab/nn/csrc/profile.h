// profile.h: phase timers for the benchmark's breakdown
// Part of the fused LSTM extension: included by fused_lstm.cpp only (one translation
// unit, so that the compiled code is the same as when this was one file).
#pragma once

#include "common.h"

namespace {

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

}  // namespace
