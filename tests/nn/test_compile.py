"""torch.compile and torch.export over the fused kernels (issue 12, item 3).

The fused kernels are torch.library custom ops (``gatelab::fused_lstm_forward_v2`` and
``gatelab::fused_lstm_backward_v2``) with fake implementations and registered autograd, so
Dynamo traces a gatelab model through the LSTM without a graph break and torch.export
keeps the op as one node. The oracle is the same module run eagerly.
"""

from __future__ import annotations

import pytest
import torch

import gatelab
from gatelab.nn.backends import fused
from tests.helpers import assert_same_snapshots, forward_backward, make_input

ok, why = fused.can_run(gatelab.LSTM(1, 1, variant="peephole"))
pytestmark = pytest.mark.skipif(not ok, reason=f"the fused kernels cannot run: {why}")

CASES = [
    dict(variant="peephole"),
    dict(variant="layernorm", num_layers=2),
    dict(variant="cifg", bidirectional=True, proj_size=3),
    dict(variant="nog", bias=False, batch_first=True),
]


def _module(seed=0, **kw):
    torch.manual_seed(seed)
    return gatelab.LSTM(4, 5, backend="fused", **kw).double()


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_compile_fullgraph_equals_eager(kw):
    m = _module(**kw)
    x = make_input(6, 3, 4, batch_first=kw.get("batch_first", False))
    eager = forward_backward(m, x, leaves=(x,))
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    got = forward_backward(compiled, x, leaves=(x,))
    assert_same_snapshots(eager, {k.replace("_orig_mod.", ""): v for k, v in got.items()})
    assert m.last_backend == "fused"


# inductor's own import of torch.jit warns; nothing of gatelab's
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_inductor_float32():
    torch.manual_seed(1)
    m = gatelab.LSTM(4, 5, variant="peephole", backend="fused")
    x = torch.randn(5, 2, 4)
    y = m(x)[0]
    y_c = torch.compile(m, fullgraph=True)(x)[0]
    torch.testing.assert_close(y_c, y, rtol=1e-6, atol=1e-6)


def test_compile_inside_a_model_with_a_head():
    torch.manual_seed(2)
    lstm = gatelab.LSTM(4, 6, variant="layernorm", backend="fused", batch_first=True).double()
    head = torch.nn.Linear(6, 2).double()

    def model(x):
        return head(lstm(x)[0][:, -1])

    x = make_input(7, 3, 4, batch_first=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-12)


def test_lstmcell_compiles():
    torch.manual_seed(3)
    cell = gatelab.LSTMCell(4, 5, variant="peephole", backend="fused").double()
    x = torch.randn(2, 4, dtype=torch.float64)
    h, c = torch.compile(cell, fullgraph=True, backend="aot_eager")(x)
    h_e, c_e = cell(x)
    torch.testing.assert_close(h, h_e, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_e, rtol=0, atol=1e-12)


def test_export_runs_and_equals_eager():
    m = _module(variant="peephole", num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    program = torch.export.export(m, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("gatelab.fused_lstm_forward_v2" in t for t in targets) == 4  # 2 layers x 2 dirs
    x2 = torch.randn(6, 3, 4, dtype=torch.float64)
    for inp in (x, x2):
        got, (h, c) = program.module()(inp)
        want, (h_e, c_e) = m(inp)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        torch.testing.assert_close(h, h_e, rtol=0, atol=1e-12)
        torch.testing.assert_close(c, c_e, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "variant, proj, keep",
    [
        ("peephole", 0, 2),
        ("layernorm", 0, 2),
        ("cifg", 2, 2),
        ("standard", 2, 1),
        ("layernorm", 0, 0),
    ],
)
def test_opcheck(variant, proj, keep):
    """torch.library.opcheck: schema, fake shapes against real ones, autograd registration."""
    m = gatelab.LSTM(3, 5, variant=variant, proj_size=proj).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=keep == 2)
    p = m.layer_parameters(0, 0)
    params = [p[n] if p.get(n) is not None else x.new_empty(0) for n in fused._PARAMS]
    params = [t.detach().requires_grad_(keep == 2) for t in params]
    P = proj or 5
    h0 = torch.randn(2, P, dtype=torch.float64)
    c0 = torch.randn(2, 5, dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    args = (x, h0, c0, params, lengths, fused.spec_flags(m.spec), keep)
    torch.library.opcheck(fused._op_forward, args)
    if keep == 2:
        res = fused._op_forward(*args)
        saved = [res[0], x.new_empty(0), x.new_empty(0), *res[3:]]
        d_out = torch.randn_like(res[0])
        bwd = (d_out, None, None, x.detach(), h0, c0, params, lengths, args[5], saved, True)
        torch.library.opcheck(
            fused._op_backward, bwd, test_utils=("test_schema", "test_faketensor")
        )


def test_op_schemas_are_those_of_their_version():
    """The ops' schemas are written out once (``_OP_INPUTS``); a change to them without a
    new version in the op names (``_OPS``) would read stale graphs from torch.compile's
    on-disk caches."""
    inputs = "Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, SymInt flags"
    assert str(fused._op_forward._opoverload._schema) == (
        f"gatelab::fused_lstm_forward_v2({inputs}, SymInt keep) -> Tensor[]"
    )
    assert str(fused._op_backward._opoverload._schema) == (
        "gatelab::fused_lstm_backward_v2(Tensor? d_out, Tensor? d_hn, Tensor? d_cn, "
        f"{inputs}, Tensor[] saved, bool need_dx) -> Tensor[]"
    )
