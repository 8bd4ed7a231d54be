"""Reading a dataclass config back from the JSON a run folder holds: one rule for every
config (model, training, experiment, TBPTT state): the value must be a dict and every key
must be a field; an unknown key is an error, never dropped, because a key this version does
not know means a folder written by another one."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def config_fields(cls: type[T], d: Any, what: str) -> dict[str, Any]:
    """A copy of ``d`` checked against the fields of dataclass ``cls``.

    Arguments:
        cls: the dataclass the dict describes.
        d: the value read from JSON.
        what: how the error names it ("model config", "train config", ...).

    Raises ``TypeError`` when ``d`` is not a dict and ``ValueError`` naming the unknown keys
    and the expected ones."""
    if not isinstance(d, dict):
        raise TypeError(f"a {what} must be a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; expected some of {sorted(names)}")
    return dict(d)


def from_config(cls: type[T], d: Any, what: str) -> T:
    """``cls(**d)`` after :func:`config_fields`."""
    return cls(**config_fields(cls, d, what))


def pick_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that name a field of dataclass ``cls`` (e.g. a command's
    options, passed to its config by name)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}
