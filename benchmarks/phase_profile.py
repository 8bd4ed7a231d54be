"""Where a fused LSTM training step's time goes, per phase, and its GEMMs against MKL (issue 16).

    PYTHONPATH=src OMP_WAIT_POLICY=PASSIVE python benchmarks/phase_profile.py  # the write-up
    PYTHONPATH=src OMP_WAIT_POLICY=PASSIVE python benchmarks/phase_profile.py --quick  # smoke run
    ... --after-only    # only the backward's after-loop phase taken apart (1 thread)
    ... --memory-only   # only peak training memory, a fresh process per measurement
    ... --gemm-only     # only the GEMM peak and tables (own against MKL)

Prints markdown: the machine's GEMM peak (MKL, oneDNN and the own kernel at large squares),
the GEMMs of the kernel's shapes (own micro-kernel against MKL ``sgemm``, MKL packed
``sgemm_compute``, ``at::mm``, ``torch.mm``/``addmm``, oneDNN and ``torch.ops.mkl._mkl_linear``
with the weight packed once), then a training step (``out.sum().backward()``, ``x``
requiring grad, T = 100, float32) of the fused ``standard`` and ``layernorm`` cells per
phase, from the extension's phase timers (``extension().profile``, csrc/profile.h), in
three kernel modes, ``default`` (what users run: GEMMs chosen per product, gemm_plan.h),
- ``split``: the same with the recurrent GEMM and the pointwise pass as two phases
  (``set_gemm_mode(0, fused_step=0)``), which is how the recurrent GEMM's share is read;
- ``aten``: every product through ``at::mm`` (MKL) (``set_gemm_mode(3)``).

and ``torch.nn.LSTM``'s step as the peer; last, the traced forward against the untraced
one. Every measurement is repeated ``--rounds`` times, configurations and modes interleaved
round-robin, and the median is reported. With
one thread, times are the calling thread's CPU time (``time.thread_time``, the extension's
``profile(2)``, ``bench_gemm(cpu=True)``): on a shared machine that leaves out the time
slices other processes take; with two threads they are wall time.

Not named ``profile.py``: a script's folder comes first on ``sys.path``, so that name would
shadow the standard library's ``profile``, which ``cProfile`` (and so ``torch._dynamo``)
imports, for every script in benchmarks/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import gatelab  # noqa: E402
from gatelab.nn.backends import fused  # noqa: E402

T = 100
CONFIGS = [(1, 64, 128), (16, 64, 128), (64, 128, 256)]  # (B, I, H) as benchmarks/speed.py
# the memory table: also B = 8 (layer norm's after-loop scratch, issue 16) and B = 32 / H = 512
MEM_CONFIGS = [(1, 64, 128), (8, 64, 128), (16, 64, 128), (64, 128, 256), (32, 256, 512)]
VARIANTS = ("standard", "layernorm")
# csrc/profile.h's slots
FWD_PROJ, FWD_GEMM, FWD_POINT, FWD_ALL, BWD_GEMM, BWD_POINT, BWD_AFTER, BWD_ALL = range(8)
# bench_gemm modes (gemm.h): own register-tiled kernel, MKL sgemm, MKL packed, at::mm
EXT_MODES = {"own": 4, "mkl sgemm": 1, "mkl packed": 2, "at::mm": 3}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "n/a"


def clock() -> float:
    """This thread's CPU time when torch runs on one thread (then the calling thread does
    all the work, and time lost to other processes on the shared machine is not counted),
    else wall time."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def per_call(fn, reps: int) -> float:
    """Seconds per call of ``fn`` over ``reps`` calls (after one warm-up call)."""
    fn()
    t0 = clock()
    for _ in range(reps):
        fn()
    return (clock() - t0) / reps


def cpu() -> bool:
    return torch.get_num_threads() == 1


def median(xs) -> float:
    return statistics.median(xs)


def medians(jobs: list[dict], callables: str) -> list[dict]:
    """Each job's ``times`` (lists per peer) as ``sec`` (medians); its callables dropped."""
    for job in jobs:
        job["sec"] = {k: median(v) for k, v in job.pop("times").items()}
        del job[callables]
    return jobs


# ----------------------------------------------------------------------------- GEMM peak
def gemm_peak(rounds: int, threads: tuple[int, ...]) -> dict[tuple[int, str, int], float]:
    """GFLOP/s at large squares n x n x n, per (threads, kernel, n): ``torch.mm`` (MKL, which
    runs its AVX2 code on AMD CPUs), oneDNN (``mkldnn::_linear_pointwise``) and the
    extension's own kernel (AVX-512 where the CPU has it): the best is the machine's peak."""
    ext = fused.extension()
    sizes = (1024, 2048)
    fns = {}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        fns["torch.mm", n] = lambda a=a, b=b, c=c: per_call(lambda: torch.mm(a, b, out=c), 3)
        if onednn_ok():
            fns["oneDNN", n] = lambda a=a, b=b: per_call(lambda: onednn(a, b), 3)
        fns["own", n] = lambda n=n: ext.bench_gemm(n, n, n, 4, 3, False, cpu())
    times = {(t, k, n): [] for t in threads for k, n in fns}
    for _ in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            for (k, n), fn in fns.items():
                times[t, k, n].append(fn())
    return {key: 2 * key[2] ** 3 / median(v) / 1e9 for key, v in times.items()}


def onednn(a, w):
    """a (M, K) w (N, K)^T through oneDNN: the op torch.compile's CPU backend calls."""
    return torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")


def onednn_ok() -> bool:
    try:
        onednn(torch.randn(2, 3), torch.randn(4, 3))
        return True
    except (AttributeError, RuntimeError):
        return False


def peak_of(peak, threads: int) -> float:
    return max(g for (t, _, _), g in peak.items() if t == threads)


# ----------------------------------------------------------------------------- GEMM shapes
def gemm_shapes(B: int, I: int, H: int) -> list[tuple[str, int, int, int]]:
    """The kernel's products as C (M, N) = A (M, K) W^T: name, M, K, N."""
    TB, GH = T * B, 4 * H
    return [
        ("input projection x W_ih^T", TB, I, GH),
        ("recurrent h W_hh^T (per step)", B, H, GH),
        ("recurrent dG W_hh (per step)", B, GH, H),
        ("dW_hh = dG^T h", GH, TB, H),
        ("dW_ih = dG^T x", GH, TB, I),
        ("dx = dG W_ih", TB, GH, I),
    ]


def gemm_peers(M: int, K: int, N: int, reps: int) -> dict:
    """Callables returning seconds per call of C (M, N) = A (M, K) W^T, W (N, K), per peer."""
    ext = fused.extension()
    a, w, bias = torch.randn(M, K), torch.randn(N, K), torch.randn(N)
    c = torch.empty(M, N)
    wt = w.t()
    peers = {
        name: (lambda mode=mode: ext.bench_gemm(M, K, N, mode, reps, False, cpu()))
        for name, mode in EXT_MODES.items()
    }
    if M <= 4:
        peers["own gemv"] = lambda: ext.bench_gemm(M, K, N, 5, reps, False, cpu())
    peers["torch.mm"] = lambda: per_call(lambda: torch.mm(a, wt, out=c), reps)
    peers["torch.addmm"] = lambda: per_call(lambda: torch.addmm(bias, a, wt, out=c), reps)
    if onednn_ok():
        peers["oneDNN"] = lambda: per_call(lambda: onednn(a, w), reps)
    if torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, M)
        peers["mkl_linear packed"] = lambda: per_call(
            lambda: torch.ops.mkl._mkl_linear(a, packed, w, None, M), reps
        )
    return peers


def gemm_table(rounds: int, threads: tuple[int, ...], quick: bool) -> list[dict]:
    jobs = []
    for t in threads:
        for B, I, H in CONFIGS[:2] if quick else CONFIGS:
            for name, M, K, N in gemm_shapes(B, I, H):
                flops = 2 * M * K * N
                reps = max(1, min(100, int(5e7 / flops)))  # a few ms a measurement
                jobs.append(
                    dict(
                        threads=t,
                        cfg=(B, I, H),
                        name=name,
                        shape=(M, K, N),
                        flops=flops,
                        peers=gemm_peers(M, K, N, reps),
                        times={},
                    )
                )
    for _ in range(rounds):
        for job in jobs:
            torch.set_num_threads(job["threads"])
            for peer, fn in job["peers"].items():
                job["times"].setdefault(peer, []).append(fn())
    return medians(jobs, "peers")


# ----------------------------------------------------------------------------- phases
def step_fn(module, x):
    def run():
        x.grad = None
        out, _ = module(x)
        out.sum().backward()

    return run


def gemm_flops(B: int, I: int, H: int) -> dict[str, float]:
    """Flops of one training step's products, by phase."""
    TB, GH = T * B, 4 * H
    return {
        "proj": 2 * TB * I * GH,
        "rec fwd": 2 * TB * H * GH,
        "rec bwd": 2 * TB * GH * H,
        "wgrad": 2 * GH * TB * (H + I) + 2 * TB * GH * I,  # dW_hh, dW_ih, dx
    }


MODES = {"default": (0, 1), "split": (0, 0), "aten": (3, 1)}
REPS = {1: 8, 16: 2, 64: 1}  # steps per measurement, by B (~10+ ms)


def profile_table(rounds: int, threads: tuple[int, ...], quick: bool) -> list[dict]:
    ext = fused.extension()
    jobs = []
    for t in threads:
        for variant in VARIANTS:
            for B, I, H in CONFIGS[:2] if quick else CONFIGS:
                torch.manual_seed(0)
                x = torch.randn(T, B, I, requires_grad=True)
                ours = gatelab.LSTM(I, H, variant=variant, backend="fused")
                peer = torch.nn.LSTM(I, H)
                jobs.append(
                    dict(
                        threads=t,
                        variant=variant,
                        cfg=(B, I, H),
                        x=x,
                        ours=ours,
                        peer=peer,
                        wall={},
                        phases={},
                    )
                )
    loads = [load()]
    for _ in range(rounds):
        for job in jobs:
            torch.set_num_threads(job["threads"])
            reps = REPS[job["cfg"][0]]
            peer = step_fn(job["peer"], job["x"])
            job["wall"].setdefault("torch", []).append(per_call(peer, reps))
            run = step_fn(job["ours"], job["x"])
            for mode, (gemm, fused_step) in MODES.items():
                ext.set_gemm_mode(gemm, fused_step, 1)
                run()  # warm-up in this mode (and this thread count)
                ext.profile(2 if cpu() else 1)  # resets the timers
                t0 = clock()
                for _ in range(reps):
                    run()
                job["wall"].setdefault(mode, []).append((clock() - t0) / reps)
                job["phases"].setdefault(mode, []).append([v / reps for v in ext.profile(0)])
            ext.set_gemm_mode(0, 1, 1)
        loads.append(load())
    for job in jobs:
        for k in ("x", "ours", "peer"):
            del job[k]
        ratios = [a / b for a, b in zip(job["wall"]["torch"], job["wall"]["default"])]
        job["spread"] = (min(ratios), max(ratios))
        job["wall"] = {k: median(v) for k, v in job["wall"].items()}
        # per slot, the median over rounds (slots need not add up exactly)
        job["phases"] = {
            m: [median(r[s] for r in v) for s in range(8)] for m, v in job["phases"].items()
        }
    return jobs, loads


# ----------------------------------------------------------------------------- traced
def traced_table(rounds: int, threads: tuple[int, ...], quick: bool) -> list[dict]:
    """Forward under no_grad of the fused ``standard`` cell: torch.nn.LSTM, the layer untraced
    and traced (``return_trace=True``), and the extension called directly with keep=0 (one
    step of buffers) and keep=1 (every step of the gates and cells kept: the trace)."""
    ext = fused.extension()
    jobs = []
    for t in threads:
        for B, I, H in CONFIGS[:2] if quick else CONFIGS:
            x = torch.randn(T, B, I)
            m = gatelab.LSTM(I, H, backend="fused")
            peer = torch.nn.LSTM(I, H)
            h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
            params = [dict(m.named_parameters()).get(f"{n}_l0") for n in fused._PARAMS]
            flags = fused.spec_flags(m.spec)

            def raw(keep, x=x, h0=h0, c0=c0, params=params, flags=flags):
                return lambda: ext.lstm_forward(x, h0, c0, params, None, flags, keep)

            fns = {
                "torch": lambda peer=peer, x=x: peer(x),
                "untraced": lambda m=m, x=x: m(x),
                "traced": lambda m=m, x=x: m(x, return_trace=True),
                "ext keep=0": raw(0),
                "ext keep=1": raw(1),
            }
            jobs.append(dict(threads=t, cfg=(B, I, H), fns=fns, times={}))
    with torch.no_grad():
        for _ in range(rounds):
            for job in jobs:
                torch.set_num_threads(job["threads"])
                reps = 4 * REPS[job["cfg"][0]]
                for k, fn in job["fns"].items():
                    job["times"].setdefault(k, []).append(per_call(fn, reps))
    return medians(jobs, "fns")


def print_traced(jobs) -> None:
    print("\n### Traced forward (no_grad, `standard`), us per call (median)\n")
    names = ["torch", "untraced", "traced", "ext keep=0", "ext keep=1"]
    print(
        "| thr | B, I, H | " + " | ".join(names) + " | traced / untraced | traced / torch "
        "| ext keep=1 / keep=0 |"
    )
    print("|" + "---|" * (len(names) + 5))
    for j in jobs:
        s = j["sec"]
        cells = " | ".join(f"{s[k] * 1e6:.0f}" for k in names)
        print(
            f"| {j['threads']} | {', '.join(map(str, j['cfg']))} | {cells} | "
            f"{s['traced'] / s['untraced']:.2f} | {s['traced'] / s['torch']:.2f} | "
            f"{s['ext keep=1'] / s['ext keep=0']:.2f} |"
        )


# ----------------------------------------------------------------------------- after phase
def after_table(rounds: int, quick: bool) -> list[dict]:
    """The backward's after-loop phase of ``standard``, one thread, taken apart without new
    timers: the extension's backward called directly on a forward's buffers, with and without
    biases and dx. bias reduction = (bias, dx) - (no bias, dx); dx = (no bias, dx) - (no bias,
    no dx); what is left is dW_hh and dW_ih with their packing and transposed copies, set
    against the same two GEMMs timed alone (``bench_gemm``, contiguous operands)."""
    ext = fused.extension()
    torch.set_num_threads(1)
    jobs = []
    for B, I, H in CONFIGS[1:2] if quick else CONFIGS[1:]:
        x, h0, c0 = torch.randn(T, B, I), torch.zeros(B, H), torch.zeros(B, H)
        dout = torch.randn(T, B, H)
        fns = {}
        for bias in (True, False):
            m = gatelab.LSTM(I, H, bias=bias, backend="fused")
            named = {k: v.detach() for k, v in m.named_parameters()}
            params = [named.get(f"{n}_l0") for n in fused._PARAMS]
            flags = fused.spec_flags(m.spec)
            res = ext.lstm_forward(x, h0, c0, params, None, flags, 2)
            saved = [res[0], None, None, res[3], res[4], *res[5:]]
            saved = [t if t is not None else torch.empty(0) for t in saved]
            for dx in (True, False) if not bias else (True,):
                args = (dout, None, None, x, h0, c0, params, None, flags, saved, dx)

                def run(args=args):
                    ext.profile(2)
                    ext.lstm_backward(*args)
                    return ext.profile(0)[BWD_AFTER]

                fns["bias" if bias else "no bias", dx] = run
        GH, TB = 4 * H, T * B
        fns["gemm"] = lambda GH=GH, TB=TB, H=H, I=I: sum(
            ext.bench_gemm(GH, TB, n, 4, 3, False, True) for n in (H, I)
        )
        jobs.append(dict(cfg=(B, I, H), fns=fns, times={}))
    for _ in range(rounds):
        for job in jobs:
            for k, fn in job["fns"].items():
                fn()  # warm-up
                job["times"].setdefault(k, []).append(fn())
    return medians(jobs, "fns")


def print_after(jobs) -> None:
    print("\n### The backward's after-loop phase taken apart (`standard`, 1 thread, ms)\n")
    print(
        "| B, I, H | after phase | bias reduction | dx | dW_hh + dW_ih | their GEMMs alone "
        "| packing, copies |"
    )
    print("|---|---|---|---|---|---|---|")
    for j in jobs:
        s = {k: v * 1e3 for k, v in j["sec"].items()}
        full, nob, dw = s["bias", True], s["no bias", True], s["no bias", False]
        print(
            f"| {', '.join(map(str, j['cfg']))} | {full:.2f} | {full - nob:.2f} | "
            f"{nob - dw:.2f} | {dw:.2f} | {s['gemm']:.2f} | {dw - s['gemm']:.2f} |"
        )


# ----------------------------------------------------------------------------- memory
def print_memory(rounds: int, quick: bool) -> None:
    """Peak memory of one training step, a fresh process per measurement (speed.py's
    ``peak_memory``: peak RSS minus RSS before the step), median of ``rounds``."""
    import speed  # benchmarks/speed.py: this script's folder is first on sys.path

    impls = ["torch", "fused:standard", "fused:layernorm"]
    cfgs = MEM_CONFIGS[:2] if quick else MEM_CONFIGS
    res: dict = {}
    for _ in range(rounds):
        for cfg in cfgs:
            for impl in impls:
                got = speed.peak_memory(*cfg, T, impl) or {}
                res.setdefault((cfg, impl), []).append(got.get("peak_bytes"))
    print("\n### Peak memory of a training step (fresh process each, MB, median)\n")
    print("| B, I, H | torch | standard (x torch) | layernorm (x torch) | min-max per impl |")
    print("|---|---|---|---|---|")
    for cfg in cfgs:
        if any(None in res[cfg, i] for i in impls):
            print(f"| {', '.join(map(str, cfg))} | failed | | | |")
            continue
        mb = {i: median(res[cfg, i]) / 2**20 for i in impls}
        spread = "; ".join(
            f"{min(res[cfg, i]) / 2**20:.1f}-{max(res[cfg, i]) / 2**20:.1f}" for i in impls
        )
        std, ln = mb["fused:standard"], mb["fused:layernorm"]
        print(
            f"| {', '.join(map(str, cfg))} | {mb['torch']:.1f} | {std:.1f} "
            f"({std / mb['torch']:.2f}) | {ln:.1f} ({ln / mb['torch']:.2f}) | {spread} |"
        )


# ----------------------------------------------------------------------------- output
def print_peak(peak) -> None:
    print(
        "\n### GEMM peak: GFLOP/s at n x n x n, float32 (the best of each thread count is the "
        "peak the tables below compare with)\n"
    )
    print("| threads | kernel | n | GFLOP/s |")
    print("|---|---|---|---|")
    for (t, k, n), g in sorted(peak.items()):
        print(f"| {t} | {k} | {n} | {g:.1f} |")


def print_gemms(jobs) -> None:
    print("\n### The kernel's GEMMs: own micro-kernel against MKL\n")
    print(
        "us per call (median); GFLOP/s of the best; ratio = best MKL/ATen peer time / own "
        "time (> 1: own faster). C (M, N) = A (M, K) W^T; packing of W is outside the time "
        "for `own`, `mkl packed` and `mkl_linear packed` (done once per weight).\n"
    )
    peers = [
        "own",
        "own gemv",
        "mkl sgemm",
        "mkl packed",
        "at::mm",
        "torch.mm",
        "torch.addmm",
        "mkl_linear packed",
        "oneDNN",
    ]
    print(
        "| thr | B, I, H | product | M, K, N | "
        + " | ".join(peers)
        + " | best | GFLOP/s best | MKL best / own |"
    )
    print("|" + "---|" * (len(peers) + 7))
    for j in jobs:
        sec = j["sec"]
        best = min(sec, key=sec.get)
        mkl = min(v for k, v in sec.items() if not k.startswith("own"))
        own = min(v for k, v in sec.items() if k.startswith("own"))
        cells = [f"{sec[p] * 1e6:.1f}" if p in sec else "-" for p in peers]
        print(
            f"| {j['threads']} | {', '.join(map(str, j['cfg']))} | {j['name']} | "
            f"{', '.join(map(str, j['shape']))} | "
            + " | ".join(cells)
            + f" | {best} | {j['flops'] / sec[best] / 1e9:.1f} | {mkl / own:.2f} |"
        )


def print_profile(jobs, peak) -> None:
    print("\n### A training step per phase (default mode, ms; % of the step)\n")
    print(
        "fwd step / bwd step = recurrent GEMM and pointwise pass fused per step (the "
        "`split` columns separate them); bwd after = dW_ih, dW_hh, dx and the reductions; "
        "rest = the step's wall time outside the kernels (autograd, allocation, "
        "`out.sum()`).\n"
    )
    print(
        "| thr | variant | B, I, H | step ms | proj | fwd step | fwd other | bwd step | "
        "bwd after | bwd other | rest | split: rec GEMM fwd+bwd ms (GFLOP/s) | "
        "split: pointwise fwd+bwd ms |"
    )
    print("|" + "---|" * 13)
    for j in jobs:
        p, w = j["phases"]["default"], j["wall"]["default"] * 1e3
        ms = [v * 1e3 for v in p]
        fwd_step = ms[FWD_GEMM] + ms[FWD_POINT]
        bwd_step = ms[BWD_GEMM] + ms[BWD_POINT]
        fwd_other = ms[FWD_ALL] - ms[FWD_PROJ] - fwd_step
        bwd_other = ms[BWD_ALL] - bwd_step - ms[BWD_AFTER]
        rest = w - ms[FWD_ALL] - ms[BWD_ALL]
        s = [v * 1e3 for v in j["phases"]["split"]]
        B, I, H = j["cfg"]
        fl = gemm_flops(B, I, H)
        rec = s[FWD_GEMM] + s[BWD_GEMM]
        rec_gf = (fl["rec fwd"] + fl["rec bwd"]) / (rec * 1e-3) / 1e9 if rec else 0.0

        def c(v, w=w):
            return f"{v:.2f} ({100 * v / w:.0f}%)"

        print(
            f"| {j['threads']} | {j['variant']} | {B}, {I}, {H} | {w:.2f} | {c(ms[FWD_PROJ])} "
            f"| {c(fwd_step)} | {c(fwd_other)} | {c(bwd_step)} | {c(ms[BWD_AFTER])} | "
            f"{c(bwd_other)} | {c(rest)} | {rec:.2f} ({rec_gf:.1f}) | "
            f"{s[FWD_POINT] + s[BWD_POINT]:.2f} |"
        )
    print("\n### Whole step: modes against torch.nn.LSTM, GFLOP/s against the peak\n")
    print(
        "ms (median); ratios = torch time / mode time (> 1: gatelab faster); GFLOP/s = the "
        "step's GEMM flops / its wall time; % of the best peak measured above (same "
        "threads). proj and bwd-after GFLOP/s: their flops / their phase time in `default` "
        "and in `aten`.\n"
    )
    print(
        "| thr | variant | B, I, H | torch ms | default | default per round (min-max) | "
        "split | aten | default GFLOP/s (% peak) | torch GFLOP/s (% peak) | "
        "proj GFLOP/s own / aten | bwd after GFLOP/s own / aten |"
    )
    print("|" + "---|" * 12)
    for j in jobs:
        B, I, H = j["cfg"]
        fl = gemm_flops(B, I, H)
        total = sum(fl.values())
        pk = peak_of(peak, j["threads"])
        w = j["wall"]
        gf, gt = total / w["default"] / 1e9, total / w["torch"] / 1e9
        d, a = j["phases"]["default"], j["phases"]["aten"]
        r = {m: w["torch"] / w[m] for m in MODES}
        print(
            f"| {j['threads']} | {j['variant']} | {B}, {I}, {H} | {w['torch'] * 1e3:.2f} | "
            f"{r['default']:.2f} | {j['spread'][0]:.2f}-{j['spread'][1]:.2f} | "
            f"{r['split']:.2f} | {r['aten']:.2f} | {gf:.1f} "
            f"({100 * gf / pk:.0f}%) | {gt:.1f} ({100 * gt / pk:.0f}%) | "
            f"{fl['proj'] / d[FWD_PROJ] / 1e9:.1f} / {fl['proj'] / a[FWD_PROJ] / 1e9:.1f} | "
            f"{fl['wgrad'] / d[BWD_AFTER] / 1e9:.1f} / {fl['wgrad'] / a[BWD_AFTER] / 1e9:.1f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round, B=1 and 16 (smoke run)")
    ap.add_argument("--rounds", type=int, default=5, help="repeats, interleaved (default 5)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="default: 2 1")
    ap.add_argument("--no-gemm", action="store_true", help="skip the GEMM tables")
    ap.add_argument("--after-only", action="store_true", help="only the after-phase table")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    ap.add_argument("--gemm-only", action="store_true", help="only the GEMM peak and tables")
    args = ap.parse_args()
    rounds, threads = (1 if args.quick else args.rounds), tuple(args.threads)
    t0 = time.time()
    print(
        f"# phase_profile.py: commit {commit()}, torch {torch.__version__}, {os.cpu_count()} cpus, "
        f"T={T}, float32, rounds={rounds}, threads={threads}, "
        f"ext: {fused.extension().blas_info()}; load {load()} at the start"
    )
    if args.memory_only or args.after_only or args.gemm_only:
        if args.memory_only:
            print_memory(rounds, args.quick)
        elif args.after_only:
            print_after(after_table(rounds, args.quick))
        else:
            print_peak(gemm_peak(rounds, threads))
            print_gemms(gemm_table(rounds, threads, args.quick))
        return print(f"\nload at the end {load()}; run time {time.time() - t0:.0f} s")
    peak = gemm_peak(rounds, threads)
    print_peak(peak)
    if not args.no_gemm:
        print_gemms(gemm_table(rounds, threads, args.quick))
        print(f"\nload after the GEMM tables: {load()}")
    jobs, loads = profile_table(rounds, threads, args.quick)
    print_profile(jobs, peak)
    print_traced(traced_table(rounds, threads, args.quick))
    if 1 in threads:
        print_after(after_table(rounds, args.quick))
    print(
        f"\nload average (1, 5, 15 min) per round: {' -> '.join(x.split()[0] for x in loads)};"
        f" at the end {load()}; run time {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
