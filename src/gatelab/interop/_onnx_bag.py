"""The ONNX graph of the text classifier's linear part (:class:`gatelab.models.bag.BagOfNgrams`)
and of its mix with the network (:class:`gatelab.models.bag.WithLinear`).

The torch forward counts each text's distinct feature columns by sorting; the graph counts
them by comparing every pair of columns of a text (``(B, L, L)``, ``L = 2T - 1``), which
needs only elementwise ops: each column occurrence ``i`` gets ``count_i``, the number of
occurrences of its column, and a distinct column's TF-IDF value is summed once by giving
each of its ``count_i`` occurrences the share ``1 / count_i``.
"""

from __future__ import annotations

from collections.abc import Callable

from gatelab.interop._onnx_graph import Builder
from gatelab.models.bag import _PRIME, BagOfNgrams, WithLinear

__all__ = ["bag_logits", "with_linear"]

_END = 2**62  # a Slice end past any length


def bag_logits(b: Builder, bag: BagOfNgrams, ids: str, lengths: str, mask: str) -> str:
    """``(B, classes)`` logits of ``bag`` for ``ids (B, T)``; ``mask (B, T)`` bool real
    steps."""
    w = b.op("Mod", [ids, b.ints(bag.vocab_size)])  # (B, T) fold-table ids back to words
    none = b.ints(-1)
    uni = b.op("Where", [mask, w, none])
    first, axis = b.ints([0]), b.ints([1])
    left = b.op("Slice", [w, first, b.ints([-1]), axis])  # (B, T - 1)
    right = b.op("Slice", [w, b.ints([1]), b.ints([_END]), axis])
    h = b.op(
        "Mod", [b.op("Add", [b.op("Mul", [left, b.ints(_PRIME)]), right]), b.ints(bag.buckets)]
    )
    bi = b.op("Add", [h, b.ints(bag.vocab_size)])
    bi = b.op("Where", [b.op("Slice", [mask, b.ints([1]), b.ints([_END]), axis]), bi, none])
    cols = b.op("Concat", [uni, bi], axis=1)  # (B, L)
    same = b.op("Equal", [b.unsqueeze(cols, [2]), b.unsqueeze(cols, [1])])  # (B, L, L)
    count = b.reduce("ReduceSum", b.op("Cast", [same], to=1), [2])  # (B, L)
    used = b.op("Not", [b.op("Less", [cols, b.ints(0)])])
    safe = b.op("Where", [used, cols, b.ints(0)])
    tf = b.op("Add", [b.const(1.0), b.op("Log", [count])])
    idf = b.op("Gather", [b.const(bag.idf, "bag_idf"), safe], axis=0)
    v = b.op("Mul", [b.op("Mul", [tf, idf]), b.op("Cast", [used], to=1)])  # (B, L)
    share = b.op("Div", [v, count])  # each distinct column once in the sums below
    sq = b.reduce("ReduceSum", b.op("Mul", [share, v]), [1], keepdims=1)  # (B, 1)
    norm = b.op("Sqrt", [sq])
    norm = b.op("Where", [b.op("Greater", [norm, b.const(0.0)]), norm, b.const(1.0)])
    coef = b.op("Gather", [b.const(bag.coef, "bag_coef"), safe], axis=0)  # (B, L, out)
    scaled = b.unsqueeze(b.op("Div", [share, norm]), [2])  # (B, L, 1)
    d = b.reduce("ReduceSum", b.op("Mul", [coef, scaled]), [1])  # (B, out)
    d = b.op("Add", [d, b.const(bag.intercept, "bag_intercept")])
    if bag.outputs == 1:
        return b.op("Concat", [b.op("Mul", [d, b.const(0.0)]), d], axis=1)  # (B, 2)
    return d


def with_linear(
    b: Builder,
    model: WithLinear,
    ids: str,
    lengths: str,
    mask: str,
    network: Callable[[Builder, object, str, str], str],
) -> str:
    """``log((1 - w) softmax(network) + w softmax(linear))``, ``(B, classes)``;
    ``network(b, module, ids, lengths)`` builds the network's outputs."""
    w = float(model.weight)
    lin = b.op("Softmax", [bag_logits(b, model.linear, ids, lengths, mask)], axis=-1)
    if w == 1.0:  # the network does not count: left out of the graph
        return b.op("Log", [lin])
    if model.max_len is not None:  # the network reads the first max_len steps
        ids = b.op("Slice", [ids, b.ints([0]), b.ints([model.max_len]), b.ints([1])])
        if lengths is not None:
            lengths = b.op("Min", [lengths, b.ints(model.max_len)])
    if model.network_vocab_size is not None:  # the linear part's own words: <unk> here
        known = b.op("Less", [ids, b.ints(model.network_vocab_size)])
        ids = b.op("Where", [known, ids, b.ints(1)])
    net = b.op("Softmax", [network(b, model.network, ids, lengths)], axis=-1)
    mixed = b.op("Add", [b.op("Mul", [net, b.const(1.0 - w)]), b.op("Mul", [lin, b.const(w)])])
    return b.op("Log", [mixed])
