"""Inputs nobody tried: empty sequences and batches, arguments that disagree, second-order
gradients (issue 10, items 1 to 3).

Anything that once killed the process runs in a child process, so that a crash is a test
failure that names the case (not a dead test run): the child prints one line per case,
either what the call returned or the exception it raised.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gatelab
from gatelab.nn.backends import _checks, fused, reference

SRC = str(Path(gatelab.__file__).resolve().parents[1])
PRESETS = list(gatelab.PRESETS)

PRELUDE = """
import json, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
import gatelab
from gatelab.nn.backends import fused, native, reference
EXT = fused.extension()
PARAMS = fused._PARAMS  # the kernels' parameter order

def case(name, fn):
    name = f"{SECTION}/{name}"
    print("START", name, flush=True)
    try:
        value = fn()
    except Exception as err:
        out = {"raised": [c.__name__ for c in type(err).__mro__], "msg": str(err)[:600]}
    else:
        out = {"returned": value}
    print("RESULT", json.dumps({"case": name, **out}), flush=True)

def layer(kind, variant="standard", backend="auto", **kw):
    torch.manual_seed(0)
    if kind == "LSTM":
        return gatelab.LSTM(3, 4, variant=variant, backend=backend, dtype=torch.float64, **kw)
    return getattr(gatelab, kind)(3, 4, backend=backend, dtype=torch.float64, **kw)

def fwd_bwd(module, x, hx=None):
    out, state = module(x, hx)
    states = state if isinstance(state, tuple) else (state,)
    loss = out.sum() + sum(s.sum() for s in states)
    loss.backward()
    grads = {n: float(p.grad.abs().sum()) if p.grad is not None else None
             for n, p in module.named_parameters()}
    return {"out": list(out.shape), "state": [list(s.shape) for s in states],
            "x_grad": list(x.grad.shape) if x.grad is not None else None, "grads": grads}

def lstm_args(variant="standard", T=3, B=2, I=3, H=4, seed=0):
    torch.manual_seed(seed)
    m = gatelab.LSTM(I, H, variant=variant, dtype=torch.float64)
    p = {k: v.detach() for k, v in m.layer_parameters(0).items()}
    spec = gatelab.PRESETS[variant]
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    return spec, x, h0, h0.clone(), p
"""


SECTIONS: dict[str, str] = {}  # the cases of each test, run in one child for them all
_results: dict[str, dict[str, dict]] = {}


def child_results(section: str) -> dict[str, dict]:
    """The ``case`` lines of ``SECTIONS[section]`` by name; the first call runs every
    section in one fresh interpreter (torch and the kernels load once)."""
    if not _results:
        _results.update(run_cases(SECTIONS))
    return _results[section]


def run_cases(sections: dict[str, str], timeout: float = 600) -> dict[str, dict[str, dict]]:
    """Run each section's code (after :data:`PRELUDE`) in a fresh interpreter. A child
    killed by a signal fails the test with the case it was running."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    code = PRELUDE + "".join(
        f"SECTION = {key!r}\n" + textwrap.dedent(body) for key, body in sections.items()
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    results: dict[str, dict[str, dict]] = {key: {} for key in sections}
    running = None
    for line in proc.stdout.splitlines():
        if line.startswith("START "):
            running = line[6:]
        elif line.startswith("RESULT "):
            r = json.loads(line[7:])
            key, r["case"] = r["case"].split("/", 1)
            results[key][r["case"]] = r
            running = None
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        pytest.fail(
            f"the child process died ({how}) in case {running!r}; stderr: {proc.stderr[-1500:]}"
        )
    return results


def raised(r: dict, *kinds: str, match: str = "") -> None:
    assert "raised" in r, f"{r['case']}: returned {r.get('returned')!r}; expected {kinds}"
    for kind in kinds:
        assert kind in r["raised"], f"{r['case']}: raised {r['raised'][0]}: {r['msg']}"
    assert match.lower() in r["msg"].lower(), f"{r['case']}: message {r['msg']!r} lacks {match!r}"


@pytest.fixture(scope="module", autouse=True)
def _built():
    fused.extension()  # build once here, so that the children only load it


# ------------------------------------------------------------------ 1. empty input


SECTIONS["empty_sequence"] = """
for variant in gatelab.PRESETS:
    for backend in ("reference", "fused", "auto"):
        for shape, kw in (((0, 2, 3), {}), ((0, 3), {}), ((2, 0, 3), {"batch_first": True})):
            def run(variant=variant, backend=backend, shape=shape, kw=kw):
                x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                return fwd_bwd(layer("LSTM", variant, backend, **kw), x)
            case(f"LSTM {variant} {backend} {shape}", run)
for kind in ("LSTM", "GRU", "RNN"):
    for backend in ("native", "reference"):
        x = torch.randn(0, 2, 3, dtype=torch.float64, requires_grad=True)
        case(f"{kind} {backend}", lambda: fwd_bwd(layer(kind, backend=backend), x))
for name, module in (("reference", reference), ("native", native), ("fused", fused)):
    spec, x, h0, c0, p = lstm_args(T=0)
    case(f"{name}.lstm_layer", lambda: module.lstm_layer(spec, x, h0, c0, p, None, False) and 0)
    case(f"{name}.gru_layer", lambda: module.gru_layer(x, h0, {
        "weight_ih": torch.zeros(12, 3, dtype=torch.float64),
        "weight_hh": torch.zeros(12, 4, dtype=torch.float64)}, None, False) and 0)
    case(f"{name}.rnn_layer", lambda: module.rnn_layer(x, h0, {
        "weight_ih": torch.zeros(4, 3, dtype=torch.float64),
        "weight_hh": torch.zeros(4, 4, dtype=torch.float64)}, None, False) and 0)
spec, x, h0, c0, p = lstm_args(variant="peephole", T=0)
params = [p.get(k) for k in PARAMS]
flags = fused.spec_flags(gatelab.PRESETS["peephole"])
case("ext.lstm_forward", lambda: EXT.lstm_forward(x, h0, c0, params, None, flags, 2) and 0)
"""


def test_empty_sequence_raises_like_torch_everywhere():
    """T = 0: torch.nn raises RuntimeError("Expected sequence length to be larger than 0");
    every layer, backend function and kernel raises the same kind (also a ValueError)."""
    results = child_results("empty_sequence")
    assert len(results) == len(PRESETS) * 3 * 3 + 6 + 9 + 1
    for name, r in results.items():
        if name.startswith("ext."):
            raised(r, "RuntimeError", match="sequence length")
        elif name.startswith(("native.gru", "native.rnn", "fused.gru", "fused.rnn")):
            raised(r, "Exception")  # the fused backend has no GRU or RNN
        else:
            raised(r, "ValueError", "RuntimeError", match="sequence length to be larger than 0")


def _torch_empty_batch(kind: str) -> dict:
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 4, dtype=torch.float64)
    x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
    out, state = module(x)
    states = state if isinstance(state, tuple) else (state,)
    (out.sum() + sum(s.sum() for s in states)).backward()
    grads = {n: float(p.grad.abs().sum()) for n, p in module.named_parameters()}
    return {"out": list(out.shape), "state": [list(s.shape) for s in states], "grads": grads}


SECTIONS["empty_batch"] = """
for variant in gatelab.PRESETS:
    for backend in ("reference", "fused", "auto"):
        def run(variant=variant, backend=backend):
            x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
            return fwd_bwd(layer("LSTM", variant, backend), x)
        case(f"LSTM {variant} {backend}", run)
for kind in ("LSTM", "GRU", "RNN"):
    for backend in ("native", "reference"):
        x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
        case(f"{kind} {backend}", lambda: fwd_bwd(layer(kind, backend=backend), x))
for variant in [v for v in gatelab.PRESETS if v != "slstm"]:  # no sLSTM LSTMCell
    for backend in ("reference", "fused", "auto"):
        def run(variant=variant, backend=backend):
            torch.manual_seed(0)
            cell = gatelab.LSTMCell(3, 4, variant=variant, backend=backend, dtype=torch.float64)
            x = torch.randn(0, 3, dtype=torch.float64, requires_grad=True)
            h, c = cell(x)
            (h.sum() + c.sum()).backward()
            return {"out": [list(h.shape), list(c.shape)], "x_grad": list(x.grad.shape),
                    "grads": {n: float(p.grad.abs().sum()) for n, p in cell.named_parameters()}}
        case(f"LSTMCell {variant} {backend}", run)
for name, module in (("reference", reference), ("fused", fused)):
    spec, x, h0, c0, p = lstm_args(B=0)
    lengths = torch.zeros(0, dtype=torch.int64)
    def run(module=module):
        out, h, c, tr = module.lstm_layer(spec, x, h0, c0, p, lengths, True)
        return [list(out.shape), list(h.shape), list(c.shape), sorted(tr)]
    case(f"{name}.lstm_layer", run)
"""


def test_empty_batch_does_what_torch_does():
    """B = 0: torch.nn returns empty outputs and zero gradients; so does every backend."""
    results = child_results("empty_batch")
    want = {kind: _torch_empty_batch(kind) for kind in ("LSTM", "GRU", "RNN")}
    for name, r in results.items():
        assert "returned" in r, f"{name} raised {r['raised'][0]}: {r['msg']}"
        got = r["returned"]
        kind = name.split()[0]
        if kind in want:
            state = want[kind]["state"]
            if "slstm" in name:  # the sLSTM's state is (h, c, n, m)
                state = state[:1] * 4
            assert got["out"] == want[kind]["out"] and got["state"] == state, name
            assert got["x_grad"] == [5, 0, 3], name
            assert all(v == 0.0 for v in got["grads"].values()), name
            if "standard" in name or kind != "LSTM":
                assert got["grads"] == want[kind]["grads"], name
        elif kind == "LSTMCell":
            assert got["out"] == [[0, 4], [0, 4]] and got["x_grad"] == [0, 3], name
            assert all(v == 0.0 for v in got["grads"].values()), name
        else:
            assert got == [
                [3, 0, 4],
                [0, 4],
                [0, 4],
                sorted(["input_gate", "forget_gate", "candidate", "output_gate", "cell", "hidden"]),
            ], name


# ------------------------------------------------------------------ 2. arguments that disagree

BAD_BACKEND_ARGS = """
def mutate(what, spec, x, h0, c0, p, lengths):
    p = dict(p)
    if what == "peephole length":
        p["weight_ci"] = p["weight_ci"][:-1]
    elif what == "weight_hh vs h0":
        p["weight_hh"] = torch.randn(16, 7, dtype=torch.float64)
    elif what == "weight_ih features":
        p["weight_ih"] = p["weight_ih"][:, :2]
    elif what == "weight_ih gate count":
        p["weight_ih"] = p["weight_ih"][:12]
    elif what == "bias length":
        p["bias_hh"] = p["bias_hh"][:-1]
    elif what == "missing weight_hh":
        del p["weight_hh"]
    elif what == "parameter dtype":
        p["weight_hh"] = p["weight_hh"].float()
    elif what == "h0 shape":
        h0 = h0[:, :3]
    elif what == "c0 batch":
        c0 = c0[:1]
    elif what == "lengths short":
        lengths = torch.tensor([3])
    elif what == "lengths zero":
        lengths = torch.tensor([3, 0])
    elif what == "lengths past T":
        lengths = torch.tensor([3, 4])
    elif what == "lengths float":
        lengths = torch.tensor([3.0, 2.0])
    elif what == "lengths 2-D":
        lengths = torch.tensor([[3, 2]])
    elif what == "x integer":
        x = x.long()
    return spec, x, h0, c0, p, lengths
"""
WHAT = {
    "peephole length": ("ValueError", "weight_ci has shape (3,); expected (4,)"),
    "weight_hh vs h0": ("ValueError", "weight_hh has shape (16, 7); expected (16, 4)"),
    "weight_ih features": ("ValueError", "weight_ih has shape (16, 2); expected (16, 3)"),
    "weight_ih gate count": ("ValueError", "weight_ih has shape (12, 3); expected (16, 3)"),
    "bias length": ("ValueError", "bias_hh has shape (15,); expected (16,)"),
    "missing weight_hh": ("ValueError", "weight_hh is missing"),
    "parameter dtype": ("TypeError", "weight_hh has dtype torch.float32; expected torch.float64"),
    "h0 shape": ("ValueError", "h0 has shape (2, 3); expected (2, 4)"),
    "c0 batch": ("ValueError", "c0 has shape (1, 4)"),
    "lengths short": ("ValueError", "lengths has 1 entries; expected one per sequence, B=2"),
    "lengths zero": ("ValueError", "lengths holds values in [0, 3]; expected each in 1..T=3"),
    "lengths past T": ("ValueError", "lengths holds values in [3, 4]; expected each in 1..T=3"),
    "lengths float": ("TypeError", "lengths has dtype torch.float32; expected an integer"),
    "lengths 2-D": ("ValueError", "lengths must be 1-D"),
    "x integer": ("TypeError", "x has dtype torch.int64; expected a floating-point"),
}


SECTIONS["backend_args"] = BAD_BACKEND_ARGS + textwrap.dedent(
    f"""
for what in {list(WHAT)!r}:
    for name, module in (("reference", reference), ("native", native), ("fused", fused)):
        variant = "peephole" if what == "peephole length" or name == "fused" else "standard"
        if name == "native" and variant != "standard":
            continue
        args = mutate(what, *lstm_args(variant), torch.tensor([3, 2]))
        case(f"{{name}} {{what}}", lambda: module.lstm_layer(*args, True) and 0)
"""
)


def test_every_backend_function_validates_before_it_computes():
    results = child_results("backend_args")
    assert len(results) == 2 * len(WHAT) + len(WHAT) - 1
    for name, r in results.items():
        kind, msg = WHAT[name.split(" ", 1)[1]]
        raised(r, kind, match=msg)


SECTIONS["kernel_args"] = BAD_BACKEND_ARGS + textwrap.dedent(
    f"""
flags = fused.spec_flags(gatelab.PRESETS["peephole"])
for what in {list(WHAT)!r}:
    spec, x, h0, c0, p, lengths = mutate(what, *lstm_args("peephole"), torch.tensor([3, 2]))
    params = [p.get(k) for k in PARAMS]
    call = lambda: EXT.lstm_forward(x, h0, c0, params, lengths, flags, 2) and 0
    case(f"forward {{what}}", call)
spec, x, h0, c0, p = lstm_args("peephole", B=0)
params = [p.get(k) for k in PARAMS]
case("forward B=0", lambda: EXT.lstm_forward(x, h0, c0, params, None, flags, 2) and 0)
spec, x, h0, c0, p = lstm_args("peephole")
params = [p.get(k) for k in PARAMS]
case("forward flags", lambda: EXT.lstm_forward(x, h0, c0, params, None, 1 << 12, 2) and 0)
case("forward keep", lambda: EXT.lstm_forward(x, h0, c0, params, None, flags, 7) and 0)
res = EXT.lstm_forward(x, h0, c0, params, None, flags, 1)
saved = [res[0], torch.empty(0), torch.empty(0), *res[3:]]
saved = [t if t is not None else torch.empty(0) for t in saved]
dout = torch.ones_like(res[0])
case("backward on a trace-only forward", lambda: EXT.lstm_backward(
    dout, None, None, x, h0, c0, params, None, flags, saved, True) and 0)
res = EXT.lstm_forward(x, h0, c0, params, None, flags, 2)
saved = [t if t is not None else torch.empty(0) for t in [res[0], None, None, *res[3:]]]
case("backward dout shape", lambda: EXT.lstm_backward(
    dout[:1], None, None, x, h0, c0, params, None, flags, saved, True) and 0)
case("backward dc_n shape", lambda: EXT.lstm_backward(
    dout, None, torch.ones(1, 4, dtype=torch.float64), x, h0, c0, params, None, flags,
    saved, True) and 0)
case("backward saved missing", lambda: EXT.lstm_backward(
    dout, None, None, x, h0, c0, params, None, flags, saved[:4], True) and 0)
given = [t for t in params if t is not None]
present = sum(1 << k for k, t in enumerate(params) if t is not None)
case("autograd present names more", lambda: EXT.lstm_autograd(
    x, h0, c0, given[:-1], present, None, flags) and 0)
case("autograd present out of range", lambda: EXT.lstm_autograd(
    x, h0, c0, given, 1 << 20, None, flags) and 0)
case("autograd weight_hh shape", lambda: EXT.lstm_autograd(
    x, h0, c0, [given[0], given[1][:, :2], *given[2:]], present, None, flags) and 0)
case("activation on a half tensor", lambda: EXT.activation(
    torch.zeros(3, dtype=torch.float16), "tanh") and 0)
case("bench_gemm of nothing", lambda: EXT.bench_gemm(0, 0, 0, 4, 1, False, False))
case("bench_parallel of -1 tasks", lambda: EXT.bench_parallel(1, -1))
"""
)


def test_fused_entry_points_follow_the_backend_contract():
    """fused's entry points take the reference's annotated signature (written once, in
    reference.py) and are the functions themselves, not wrappers."""
    for name in ("lstm_layer", "slstm_layer"):
        ours, contract = getattr(fused, name), getattr(reference, name)
        assert inspect.signature(ours) == inspect.signature(contract)
        assert "tuple[Tensor" in str(inspect.signature(ours).return_annotation)
        assert not hasattr(ours, "__wrapped__")
        assert ours.__module__ == fused.__name__


def test_a_backend_that_drifts_from_the_contract_fails_at_import():
    def renamed(spec, x, h0, c0, params, lengths, need_trace):
        pass

    def with_default(spec, x, h0, c0, p, lengths, need_trace=False):
        pass

    for fn, shown in ((renamed, "params"), (with_default, "need_trace=False")):
        with pytest.raises(TypeError, match=f"{shown}.*does not follow the backend contract"):
            _checks.follows(reference.lstm_layer)(fn)

    def same(spec, x, h0, c0, p, lengths, need_trace):
        return "ran"

    assert _checks.follows(reference.lstm_layer)(same) is same


def test_kernels_check_their_own_arguments():
    """The C++ entry points are reachable directly: they refuse what their loops would
    read or write out of bounds, with a RuntimeError (never a crash)."""
    results = child_results("kernel_args")
    assert len(results) == len(WHAT) + 13
    for r in results.values():
        raised(r, "RuntimeError")
    assert "sequence" in results["forward B=0"]["msg"] or "B=0" in results["forward B=0"]["msg"]
    assert "weight_ci" in results["forward peephole length"]["msg"]
    assert "lengths" in results["forward lengths short"]["msg"]
    assert "weight_hh" in results["forward weight_hh vs h0"]["msg"]
    assert "weight_ih has sizes [12, 3]" in results["forward weight_ih gate count"]["msg"]


SECTIONS["layer_params"] = """
for variant, backend in (("peephole", "fused"), ("peephole", "reference"),
                         ("standard", "native"), ("standard", "auto")):
    m = layer("LSTM", variant, backend)
    bad = "weight_ci_l0" if variant == "peephole" else "weight_hh_l0"
    shape = list(getattr(m, bad).shape)
    shape[-1] -= 1
    setattr(m, bad, torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)))
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    case(f"LSTM {variant} {backend}", lambda: fwd_bwd(m, x))
for variant in ("peephole", "standard"):
    cell = gatelab.LSTMCell(3, 4, variant=variant, dtype=torch.float64)
    bad = "weight_ci" if variant == "peephole" else "weight_hh"
    shape = list(getattr(cell, bad).shape)
    shape[-1] -= 1
    setattr(cell, bad, torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)))
    case(f"LSTMCell {variant}", lambda: cell(torch.randn(2, 3, dtype=torch.float64)) and 0)
"""


def test_layer_checks_its_parameters():
    """A parameter replaced by one of the wrong shape is named before anything runs."""
    results = child_results("layer_params")
    assert len(results) == 6
    for name, r in results.items():
        raised(r, "ValueError", match="has shape")
        assert ("weight_ci" if "peephole" in name else "weight_hh") in r["msg"], r


# ------------------------------------------------------------------ 3. double backward


@pytest.mark.parametrize("variant", ["peephole", "slstm"])
def test_fused_backward_is_once_differentiable(variant):
    torch.manual_seed(0)
    lstm = gatelab.LSTM(3, 4, variant=variant, backend="fused", dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = lstm(x)
    (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    loss = out.sum() + gx.pow(2).sum()  # a gradient penalty next to an ordinary loss
    with pytest.raises(RuntimeError, match="once_differentiable"):
        loss.backward()  # before: the penalty silently contributed 0


@pytest.mark.parametrize("kind", ["LSTM", "LSTMCell"])
def test_second_order_gradients_through_auto_equal_torch(kind):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(3, 4, dtype=torch.float64)
    ours = getattr(gatelab, kind)(3, 4, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict(), strict=True)
    shape = (5, 2, 3) if kind == "LSTM" else (2, 3)
    x = torch.randn(shape, dtype=torch.float64)
    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        first = out[0].pow(2).sum() + (out[1][1] if kind == "LSTM" else out[1]).sum()
        (gx,) = torch.autograd.grad(first, xi, create_graph=True)
        assert gx.requires_grad  # torch's input gradient carries a graph; so must ours
        second = torch.autograd.grad(gx.pow(2).sum(), [xi, *module.parameters()])
        results.append((gx.detach(), second))
    assert ours.last_backend == "native"
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-12)
    assert float(results[0][1][0].abs().max()) > 0  # the penalty term is not trivially zero
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ found by the fuzz


def test_infinite_input_propagates_as_in_the_reference():
    """With an identity candidate (niaf) and an infinite input, the float32 kernels'
    sigmoid(-inf) was 6e-39 instead of 0: a closed gate times an infinite candidate gave
    inf (and then a finite h through tanh) where the reference gives NaN."""
    inf = float("inf")
    got = fused.extension().activation(torch.tensor([-inf, inf]), "sigmoid")
    assert torch.equal(got, torch.tensor([0.0, 1.0]))
    torch.manual_seed(0)
    ref = gatelab.LSTM(1, 8, variant="niaf", backend="reference")
    fus = gatelab.LSTM(1, 8, variant="niaf", backend="fused")
    fus.load_state_dict(ref.state_dict())
    x = torch.full((2, 1, 1), inf)
    a, b = fus(x)[0], ref(x)[0]
    assert not torch.isfinite(b).all()
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_padded_steps_reach_no_gradient(backend):
    """Found by the fuzz: NaN on a padded step (t >= lengths[b]) of a backend's input made
    dW_ih NaN (0 * NaN) on the reference and fused backends; native, which packs, ignores
    it. What stands on padded steps now reaches nothing, as with a PackedSequence."""
    from gatelab.nn.backends import native, reference

    torch.manual_seed(0)
    m = gatelab.LSTM(3, 4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    x[3, 1] = float("nan")  # sequence 1 has 3 steps: step 3 is padding
    lengths = torch.tensor([4, 3])
    h0 = torch.zeros(2, 4, dtype=torch.float64)
    grads = []
    for module in (native, reference if backend == "reference" else fused):
        p = {k: v.detach().clone().requires_grad_() for k, v in m.layer_parameters(0).items()}
        xi = x.clone().requires_grad_()
        out, h_n, c_n, _ = module.lstm_layer(m.spec, xi, h0, h0, p, lengths, False)
        loss = out.sum() + h_n.sum() + c_n.sum()
        grads.append(torch.autograd.grad(loss, [xi, *p.values()]))
    for a, b in zip(grads[1], grads[0]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_lstmcell_refuses_the_slstm_cell_when_built():
    with pytest.raises(ValueError, match=r"state is \(h, c, n, m\)"):
        gatelab.LSTMCell(3, 4, variant="slstm")
