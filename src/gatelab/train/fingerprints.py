"""Fingerprints of a run's input data, and the comparison that refuses to resume a run
on other options or other data (:func:`check_same`, listing every difference)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gatelab.errors import RunFolderError
from gatelab.train.files import json_safe

__all__ = ["check_same", "differences", "fingerprint_file", "fingerprint_tensors"]


def fingerprint_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file (read in 1 MiB chunks)."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(path), "size": size, "sha256": digest.hexdigest()}


def fingerprint_tensors(*tensors: Tensor | None) -> dict[str, Any]:
    """``{"size", "sha256"}`` over the dtypes, shapes and bytes of ``tensors`` (None skipped):
    the fingerprint of in-memory data."""
    digest = hashlib.sha256()
    size = 0
    for t in tensors:
        if t is None:
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():  # hashed through the buffer protocol: no copy of the data
            data = t.view(torch.uint8).numpy()
            digest.update(data)
            size += data.nbytes
    return {"size": size, "sha256": digest.hexdigest()}


def _is_fingerprint(value: Any) -> bool:
    return isinstance(value, dict) and "sha256" in value and "size" in value


def _close(saved: Any, now: Any, rel_tol: float) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (saved, now))
    floats = isinstance(saved, float) or isinstance(now, float)
    return (
        rel_tol > 0
        and numbers
        and floats
        and math.isclose(saved, now, rel_tol=rel_tol, abs_tol=rel_tol * 1e-3)
    )


def _differences(saved: Any, now: Any, prefix: str, rel_tol: float) -> list[tuple[str, str]]:
    if _is_fingerprint(saved) and _is_fingerprint(now):
        if (saved["size"], saved["sha256"]) == (now["size"], now["sha256"]):
            return []
        where = f" ('{now['path']}')" if now.get("path") else ""
        return [
            (
                prefix,
                f"{prefix}: the data changed{where}: saved {saved['size']} bytes, sha256 "
                f"{saved['sha256'][:12]}..., now {now['size']} bytes, sha256 "
                f"{now['sha256'][:12]}...",
            )
        ]
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[tuple[str, str]] = []
        for key in list(saved) + [k for k in now if k not in saved]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in now:
                out.append((name, f"{name}: saved {saved[key]!r}, now not given"))
            elif key not in saved:
                out.append((name, f"{name}: not saved, now {now[key]!r}"))
            else:
                out += _differences(saved[key], now[key], name, rel_tol)
        return out
    if rel_tol > 0 and isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        out = []
        for k, (a, b) in enumerate(zip(saved, now)):
            out += _differences(a, b, f"{prefix}[{k}]", rel_tol)
        return out
    if _close(saved, now, rel_tol):
        return []
    if json_safe(saved) != json_safe(now):
        return [(prefix, f"{prefix}: saved {saved!r}, now {now!r}")]
    return []


def differences(
    saved: Any, now: Any, free: Collection[str] = (), rel_tol: float = 0.0
) -> list[str]:
    """Each difference between two JSON values, as ``"key.path: saved X, now Y"`` lines,
    leaving out the dotted keys in ``free``.

    Fingerprints (dicts with ``size`` and ``sha256``) compare by content, not by path.
    ``rel_tol`` > 0: lists compare element by element and floats within that relative
    tolerance (or ``rel_tol * 1e-3`` absolute near zero): for values computed from the
    data, which another CPU or BLAS rounds differently in the last bits.
    """
    return [text for key, text in _differences(saved, now, "", rel_tol) if key not in free]


def check_same(
    run_dir: str | os.PathLike, saved: Any, now: Any, free: Collection[str] = ()
) -> None:
    """Refuse to resume ``run_dir`` unless ``now`` equals ``saved`` (options and input
    fingerprints) but for the dotted keys in ``free``; the RunFolderError lists every
    difference."""
    found = differences(saved, now, free)
    if found:
        raise RunFolderError(
            f"cannot resume '{run_dir}': it was started with other options or data, and "
            f"resuming needs the same ones. {len(found)} difference(s): "
            + "; ".join(found)
            + ". Give the same options and data, or start a new run in another folder"
        )
