"""Speed of gatelab's LSTM backends against torch.nn.LSTM, measured in one process and run.

    python benchmarks/speed.py            # the full table (a few minutes on 2 cores)
    python benchmarks/speed.py --quick    # a smoke run (seconds)
    python benchmarks/speed.py --json out.json
    python benchmarks/speed.py --slstm    # only the sLSTM against torch.nn.LSTM (a minute)

Times are medians of repeats after warm-up, forward (no grad) and forward+backward
(``out.sum().backward()`` with ``x`` requiring grad), float32, time-major, T = 100.
Every ratio is peer time / gatelab time, so > 1 means gatelab is faster; peers and
gatelab alternate within each configuration so that drift of a busy machine hits both.

Peak memory of one training step (forward+backward) is measured in a fresh subprocess per
configuration and implementation: the process resets its peak resident set size
(``echo 5 > /proc/self/clear_refs``, Linux), runs one step, and reports ``VmHWM`` (peak
RSS) minus ``VmRSS`` just before the step. That counts every allocation the step makes
(torch's allocator, oneDNN scratch, the extension), after a short warm-up step that
builds caches and loads kernels. Memory that the warm-up allocated and freed (the fused
kernel's GEMM probes, MKL's buffers) stays in the process and is reused by the step
without showing there, so a second figure, "from the start", is the peak over the warm-up
and the step together minus ``VmRSS`` before the warm-up (after the module was built and
its kernels loaded): what the first training step of a new process costs. Loading the
fused extension (``fused.extension()``: ``torch.utils.cpp_extension``'s Python imports and
the ``.so``, about 6 MB whatever the size) happens before that, as ``import torch`` does
for torch's kernels, and is reported apart ("load"): counted in "from the start" it made
a per-process import look like a per-size cost (issue 16, BENCHMARKS.md "The first step's
memory").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

CONFIGS = [(1, 64, 128), (8, 64, 128), (16, 64, 128), (64, 128, 256), (32, 256, 512)]
QUICK_CONFIGS = [(1, 64, 128), (16, 64, 128)]


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_ms(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median ms of each function, timed round-robin (one call of each per round), so that
    a change of the machine's load during the run hits every function alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def forward_fn(module, x, **kw):
    def run():
        with torch.no_grad():
            module(x, **kw)

    return run


def train_fn(module, x):
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)[0]
        out.sum().backward()

    return run


def repeats_for(B: int, H: int, T: int, quick: bool) -> int:
    if quick:
        return 3
    work = B * H * H * T
    return 25 if work < 2e8 else 11 if work < 2e9 else 7


def bench_config(B, I, H, T, presets, quick, with_reference):
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    peer = torch.nn.LSTM(I, H)
    native = gatelab.LSTM(I, H, backend="native")
    native.load_state_dict(peer.state_dict())
    n = repeats_for(B, H, T, quick)
    row = {"B": B, "I": I, "H": H, "T": T, "repeats": n, "load_before": os.getloadavg()[0]}
    fused_mods = {}
    for name in presets:
        m = gatelab.LSTM(I, H, variant=name, backend="fused")
        if name == "standard":
            m.load_state_dict(peer.state_dict())
        fused_mods[name] = m
    # forward passes, round-robin
    fns = {"torch": forward_fn(peer, x), "native": forward_fn(native, x)}
    fns.update({f"fused:{k}": forward_fn(m, x) for k, m in fused_mods.items()})
    fns["traced"] = forward_fn(fused_mods["standard"], x, return_trace=True)
    fwd = interleaved_ms(fns, n)
    # forward+backward, round-robin
    fns = {"torch": train_fn(peer, x), "native": train_fn(native, x)}
    fns.update({f"fused:{k}": train_fn(m, x) for k, m in fused_mods.items()})
    train = interleaved_ms(fns, n)
    row["torch_fwd_ms"], row["torch_train_ms"] = fwd["torch"], train["torch"]
    row["native_fwd_ms"], row["native_train_ms"] = fwd["native"], train["native"]
    row["native_fwd2_ms"] = fwd["native"]
    row["fused"] = {
        k: {"fwd_ms": fwd[f"fused:{k}"], "train_ms": train[f"fused:{k}"]} for k in fused_mods
    }
    row["fused"]["standard"]["traced_fwd_ms"] = fwd["traced"]
    if with_reference:
        ref = gatelab.LSTM(I, H, backend="reference")
        ref.load_state_dict(peer.state_dict())
        k = max(3, n // 3)
        fns = {
            "reference_fwd": forward_fn(ref, x),
            "fused_fwd": forward_fn(fused_mods["standard"], x),
            "reference_train": train_fn(ref, x),
            "fused_train": train_fn(fused_mods["standard"], x),
        }
        r = interleaved_ms(fns, k, warmup=1)
        row["reference_fwd_ms"] = r["reference_fwd"]
        row["reference_train_ms"] = r["reference_train"]
        row["fused_vs_ref_fwd_ms"] = r["fused_fwd"]
        row["fused_vs_ref_train_ms"] = r["fused_train"]
    row["load_after"] = os.getloadavg()[0]
    return row


SLSTM_CONFIG = (64, 128, 256)  # B, I, H: the target shape, one head


def bench_slstm(quick: bool, T: int) -> dict:
    """The fused sLSTM's training step (and forward) against torch.nn.LSTM's on the same
    hidden size, interleaved. The sLSTM does more per step (exp, a normalizer, a
    division) and runs gatelab's C++ loop; torch.nn.LSTM runs oneDNN's fused kernel."""
    B, I, H = SLSTM_CONFIG
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    peer = torch.nn.LSTM(I, H)
    slstm = gatelab.LSTM(I, H, variant="slstm", backend="fused")
    n = repeats_for(B, H, T, quick)
    row = {"B": B, "I": I, "H": H, "T": T, "repeats": n, "load_before": os.getloadavg()}
    fwd = interleaved_ms({"torch": forward_fn(peer, x), "slstm": forward_fn(slstm, x)}, n)
    train = interleaved_ms({"torch": train_fn(peer, x), "slstm": train_fn(slstm, x)}, n)
    row.update(torch_fwd_ms=fwd["torch"], slstm_fwd_ms=fwd["slstm"])
    row.update(torch_train_ms=train["torch"], slstm_train_ms=train["slstm"])
    row["train_ratio"] = ratio(train["torch"], train["slstm"])
    row["fwd_ratio"] = ratio(fwd["torch"], fwd["slstm"])
    row["load_after"] = os.getloadavg()
    return row


def print_slstm(row: dict) -> None:
    print(
        f"sLSTM (fused, 1 head) vs torch.nn.LSTM, T={row['T']} B={row['B']} I={row['I']} "
        f"H={row['H']}, {torch.get_num_threads()} threads, load {row['load_before']} -> "
        f"{row['load_after']}"
    )
    print(
        f"  train step: torch {row['torch_train_ms']:.1f} ms, sLSTM {row['slstm_train_ms']:.1f} "
        f"ms, ratio torch/sLSTM {row['train_ratio']:.2f} (target >= 0.8)"
    )
    print(
        f"  forward:    torch {row['torch_fwd_ms']:.1f} ms, sLSTM {row['slstm_fwd_ms']:.1f} "
        f"ms, ratio {row['fwd_ratio']:.2f}"
    )


def bench_cell(quick: bool) -> dict:
    torch.manual_seed(0)
    B, I, H = 1, 256, 256
    peer = torch.nn.LSTMCell(I, H)
    cell = gatelab.LSTMCell(I, H, backend="fused")
    cell.load_state_dict(peer.state_dict())
    x = torch.randn(B, I, requires_grad=True)
    hx = (torch.randn(B, H), torch.randn(B, H))
    n = 50 if quick else 400

    def fwd(m):
        def run():
            with torch.no_grad():
                m(x, hx)

        return run

    def train(m):
        def run():
            h, c = m(x, hx)
            (h.sum() + c.sum()).backward()

        return run

    r = {"B": B, "I": I, "H": H}
    fns = {"torch_fwd": fwd(peer), "fused_fwd": fwd(cell)}
    fns.update(torch_train=train(peer), fused_train=train(cell))
    for k, v in interleaved_ms(fns, n, 20).items():
        r[f"{k}_us"] = v * 1e3
    return r


# --------------------------------------------------------------------- peak memory

_MEM_CHILD = r"""
import os, sys, json, torch
sys.path.insert(0, {src!r})
import gatelab
B, I, H, T, impl = {B}, {I}, {H}, {T}, {impl!r}
torch.manual_seed(0)
if impl == "torch":
    m = torch.nn.LSTM(I, H)
else:
    m = gatelab.LSTM(I, H, variant=impl.split(":")[1], backend="fused")
def step(T):
    x = torch.randn(T, B, I, requires_grad=True)
    m(x)[0].sum().backward()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
loaded = status("VmRSS:")
if impl != "torch":  # the kernels' library, as `import torch` loaded torch's
    from gatelab.nn.backends.fused import extension
    extension()
reset_peak()
start = status("VmRSS:")
step(3)  # warm-up: kernels, caches, the GEMM probes
warm_peak = status("VmHWM:")
m.zero_grad(set_to_none=True)
x = torch.randn(T, B, I, requires_grad=True)
reset_peak()
before = status("VmRSS:")
m(x)[0].sum().backward()
peak = status("VmHWM:")
print(json.dumps({{"peak_bytes": peak - before, "first_bytes": max(peak, warm_peak) - start,
                  "load_bytes": start - loaded}}))
"""


def peak_memory(B, I, H, T, impl, src: Path | None = None) -> dict | None:
    """{"peak_bytes": the step's own peak, "first_bytes": from the start, "load_bytes": the
    extension's loading (0 for torch)} or None; gatelab from ``src`` (default this
    checkout's)."""
    code = _MEM_CHILD.format(src=str(src or ROOT / "src"), B=B, I=I, H=H, T=T, impl=impl)
    env = dict(os.environ)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception:
        return None


# --------------------------------------------------------------------- report


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg(),
        "python": platform.python_version(),
        # torch's kernels meet at a barrier every step, the fused one splits a step only
        # when that pays: how long the machine takes to start and join an empty parallel
        # region (OpenMP's wait policy and the hypervisor's wake-up decide it, 1 to 100+ us)
        # moves the ratios more than any kernel change (BENCHMARKS.md, session 12)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "parallel_region_us": fused.extension().bench_parallel(2000, torch.get_num_threads()),
    }


def ratio(a, b):
    return a / b if a and b else float("nan")


def print_table(res: dict) -> None:
    m = res["machine"]
    print(
        f"machine: {m['nproc']} cpus, {m['cpu']}; torch {m['torch']}, "
        f"{m['threads']} threads; load {m['load_avg'][0]:.2f} (start) "
        f"{res['load_after'][0]:.2f} (end)"
    )
    if "parallel_region_us" in m:
        print(
            f"OMP_WAIT_POLICY {m['omp_wait_policy']}; an empty parallel region "
            f"{m['parallel_region_us']:.1f} us"
        )
    print("ratios are torch.nn.LSTM time / gatelab time (> 1: gatelab faster)\n")
    presets = list(res["rows"][0]["fused"])
    head = f"{'B,I,H':>12} {'pass':>6} {'native':>7} " + " ".join(f"{p[:8]:>8}" for p in presets)
    print(head)
    for row in res["rows"]:
        cfg = f"{row['B']},{row['I']},{row['H']}"
        for kind, key in (("fwd", "fwd_ms"), ("train", "train_ms")):
            peer = row[f"torch_{key}"]
            cells = [f"{ratio(peer, row[f'native_{key}']):7.2f}"]
            cells += [f"{ratio(peer, row['fused'][p][key]):8.2f}" for p in presets]
            print(f"{cfg:>12} {kind:>6} " + " ".join(cells))
    print("\nabsolute times (ms): torch fwd / train, fused standard fwd / train; load")
    for row in res["rows"]:
        fs = row["fused"]["standard"]
        print(
            f"  B={row['B']:3d} I={row['I']:3d} H={row['H']:3d}: {row['torch_fwd_ms']:8.2f} "
            f"{row['torch_train_ms']:8.2f} | {fs['fwd_ms']:8.2f} {fs['train_ms']:8.2f}; "
            f"load {row['load_before']:.2f} -> {row['load_after']:.2f}"
        )
    print("\ntraced fused forward / untraced forward, native and fused (target <= 1.15)")
    for row in res["rows"]:
        fs = row["fused"]["standard"]
        print(
            f"  B={row['B']:3d} H={row['H']:3d}: {fs['traced_fwd_ms'] / row['native_fwd2_ms']:.2f}"
            f", {fs['traced_fwd_ms'] / fs['fwd_ms']:.2f}"
        )
    refs = [r for r in res["rows"] if "reference_train_ms" in r]
    if refs:
        print("\nfused standard vs the reference loop (reference time / fused time)")
        for row in refs:
            fs = row["fused"]["standard"]
            print(
                f"  B={row['B']:3d} H={row['H']:3d}: fwd "
                f"{row['reference_fwd_ms'] / row['fused_vs_ref_fwd_ms']:.1f}x, train "
                f"{row['reference_train_ms'] / row['fused_vs_ref_train_ms']:.1f}x"
            )
    if res.get("memory"):
        print(
            "\npeak memory of one training step "
            "(MB; fused / torch, target <= 1.0, layernorm <= 1.2)"
        )
        for mem in res["memory"]:
            for label, got in (("step", mem), ("from the start", mem.get("first", {}))):
                t = got.get("torch")
                if not t:
                    continue
                parts = [f"torch {t / 2**20:7.1f}"]
                for k, v in got.items():
                    if k.startswith("fused:") and v:
                        parts.append(f"{k[6:]} {v / 2**20:7.1f} ({v / t:.2f})")
                print(f"  B={mem['B']:3d} H={mem['H']:3d} {label}: " + ", ".join(parts))
        loads = [v for mem in res["memory"] for v in mem.get("load", {}).values() if v]
        if loads:
            print(
                f"  loading the fused extension before the warm-up (in neither figure): "
                f"{min(loads) / 2**20:.1f}-{max(loads) / 2**20:.1f} MB"
            )
    c = res.get("cell")
    if c is None:  # --variants / --sizes: the layer comparison only
        return
    print(
        f"\nLSTMCell step B={c['B']}, H={c['H']} (us): fwd torch {c['torch_fwd_us']:.1f} "
        f"fused {c['fused_fwd_us']:.1f} ({ratio(c['torch_fwd_us'], c['fused_fwd_us']):.2f}x); "
        f"train torch {c['torch_train_us']:.1f} fused {c['fused_train_us']:.1f} "
        f"({ratio(c['torch_train_us'], c['fused_train_us']):.2f}x)"
    )


def markdown(res: dict) -> str:
    """The ratio tables as Markdown (for BENCHMARKS.md)."""
    m = res["machine"]
    out = [
        f"{m['nproc']} cpus ({m['cpu']}), torch {m['torch']}, {m['threads']} threads, "
        f"T = {res['T']}, float32; load average {m['load_avg'][0]:.2f} at the start, "
        f"{res['load_after'][0]:.2f} at the end; OMP_WAIT_POLICY "
        f"{m.get('omp_wait_policy', '?')}, an empty parallel region "
        f"{m.get('parallel_region_us', float('nan')):.1f} us.",
        "",
        "Ratios: torch.nn.LSTM time / gatelab time (> 1: gatelab faster); fwd = forward "
        "under no_grad, train = forward + backward.",
        "",
    ]
    presets = list(res["rows"][0]["fused"])
    out.append("| B, I, H | pass | torch ms | native | " + " | ".join(presets) + " |")
    out.append("|---" * (4 + len(presets)) + "|")
    for row in res["rows"]:
        cfg = f"{row['B']}, {row['I']}, {row['H']}"
        for kind, key in (("fwd", "fwd_ms"), ("train", "train_ms")):
            peer = row[f"torch_{key}"]
            cells = [f"{ratio(peer, row[f'native_{key}']):.2f}"]
            cells += [f"{ratio(peer, row['fused'][p][key]):.2f}" for p in presets]
            out.append(f"| {cfg} | {kind} | {peer:.2f} | " + " | ".join(cells) + " |")
    out += ["", "| B, H | traced fused fwd / native fwd | load during the config |"]
    out.append("|---|---|---|")
    for row in res["rows"]:
        fs = row["fused"]["standard"]
        out.append(
            f"| {row['B']}, {row['H']} | {fs['traced_fwd_ms'] / row['native_fwd2_ms']:.2f} | "
            f"{row['load_before']:.2f} -> {row['load_after']:.2f} |"
        )
    out += ["", "| B, H | reference / fused, fwd | reference / fused, train |", "|---|---|---|"]
    for row in res["rows"]:
        if "reference_train_ms" in row:
            out.append(
                f"| {row['B']}, {row['H']} | "
                f"{row['reference_fwd_ms'] / row['fused_vs_ref_fwd_ms']:.1f}x | "
                f"{row['reference_train_ms'] / row['fused_vs_ref_train_ms']:.1f}x |"
            )
    if res.get("memory"):
        keys = [k for k in res["memory"][0] if k.startswith("fused:")]
        head = " | ".join(k[6:] for k in keys)
        out += ["", f"| B, H | torch MB | {head} | from the start: torch MB | {head} |"]
        out.append("|---" * (3 + 2 * len(keys)) + "|")

        def mb(got: dict) -> list[str]:
            t = got.get("torch") or float("nan")
            cells = [f"{t / 2**20:.1f}"]
            for k in keys:
                v = got.get(k) or float("nan")
                cells.append(f"{v / 2**20:.1f} ({v / t:.2f})")
            return cells

        for mem in res["memory"]:
            cells = mb(mem) + mb(mem.get("first", {}))
            out.append(f"| {mem['B']}, {mem['H']} | " + " | ".join(cells) + " |")
        loads = [v for mem in res["memory"] for v in mem.get("load", {}).values() if v]
        if loads:
            out += [
                "",
                f"Loading the fused extension before the warm-up (in neither figure): "
                f"{min(loads) / 2**20:.1f}-{max(loads) / 2**20:.1f} MB.",
            ]
    c = res.get("cell")
    if c is None:
        return "\n".join(out) + "\n"
    out += [
        "",
        f"LSTMCell, B = {c['B']}, H = {c['H']}: forward {c['torch_fwd_us']:.1f} us (torch) vs "
        f"{c['fused_fwd_us']:.1f} us (fused), {ratio(c['torch_fwd_us'], c['fused_fwd_us']):.2f}x; "
        f"forward + backward {c['torch_train_us']:.1f} vs {c['fused_train_us']:.1f} us, "
        f"{ratio(c['torch_train_us'], c['fused_train_us']):.2f}x.",
    ]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("-T", type=int, default=None, help="sequence length (default 100)")
    ap.add_argument("--slstm", action="store_true", help="only the sLSTM against torch")
    ap.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="only these presets (standard is always run: the traced row reads it); "
        "skips the LSTMCell and sLSTM rows",
    )
    ap.add_argument(
        "--sizes",
        nargs="+",
        metavar="B,I,H",
        help="only these sizes, e.g. 64,128,256; skips the LSTMCell and sLSTM rows",
    )
    args = ap.parse_args(argv)

    fused.extension()  # build (or load) before timing anything
    T = args.T or (20 if args.quick else 100)
    if args.slstm:
        row = bench_slstm(args.quick, T)
        print_slstm(row)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine(), "slstm": row}, indent=2))
        return 0
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.sizes:
        configs = [tuple(int(v) for v in size.split(",")) for size in args.sizes]
        if any(len(c) != 3 for c in configs):
            raise SystemExit(f"--sizes takes B,I,H triples, got {args.sizes}")
    # the sLSTM (other state, other kernels) has its own comparison: bench_slstm
    presets = (
        ["standard", "peephole", "cifg"]
        if args.quick
        else [k for k, v in gatelab.PRESETS.items() if not v.normalizer]
    )
    if args.variants:
        unknown = sorted(set(args.variants) - set(gatelab.PRESETS))
        if unknown:
            raise SystemExit(f"--variants: unknown presets {unknown}")
        presets = ["standard", *(v for v in args.variants if v != "standard")]
    only = bool(args.variants or args.sizes)
    res = {"machine": machine(), "T": T, "rows": [], "memory": []}
    for B, I, H in configs:
        with_ref = (B, H) in ((16, 128), (1, 128))
        res["rows"].append(bench_config(B, I, H, T, presets, args.quick, with_ref))
        print(f"  done B={B} I={I} H={H}", file=sys.stderr, flush=True)
    if not only:
        res["cell"] = bench_cell(args.quick)
        res["slstm"] = bench_slstm(args.quick, T)
    if not args.no_memory and sys.platform.startswith("linux"):
        mem_presets = ["standard"] if args.quick else ["standard", "peephole", "layernorm"]
        if args.variants:
            mem_presets = [p for p in presets if p in ("standard", "peephole", "layernorm")]
        for B, I, H in configs:
            mem = {"B": B, "I": I, "H": H, "first": {}, "load": {}}
            for impl in ["torch", *(f"fused:{p}" for p in mem_presets)]:
                got = peak_memory(B, I, H, T, impl) or {}
                mem[impl] = got.get("peak_bytes")
                mem["first"][impl] = got.get("first_bytes")
                mem["load"][impl] = got.get("load_bytes")
            res["memory"].append(mem)
    res["load_after"] = os.getloadavg()
    print_table(res)
    if "slstm" in res:
        print_slstm(res["slstm"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
