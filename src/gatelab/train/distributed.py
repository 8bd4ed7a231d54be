"""Data-parallel training on ``torch.distributed``: the process group, shards, collectives.

A gatelab job runs on N processes ("ranks") when ``torchrun`` (``torch.distributed.run``)
starts it, or ``gatelab train ... --nproc N``, which calls the same launcher. Each rank
reads what torchrun sets in its environment:

    RANK, WORLD_SIZE     this process's rank and the number of ranks
    LOCAL_RANK           the rank on this machine (picks the GPU)
    MASTER_ADDR, MASTER_PORT   where rank 0 listens (the rendezvous)
    TORCHELASTIC_RESTART_COUNT how often the elastic agent restarted the workers

Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing here does anything: a single
process trains exactly as it always has.

How the training loops use it (:func:`gatelab.train.fit.fit`):

- the global batch is the configured ``batch_size``; every rank draws the same batches
  from the same seeded shuffle and takes its own part of each (:func:`shard`, every
  ``world_size``-th sequence of the length-bucketed batch); each rank's loss is weighted by
  its share of the batch, so the gradients DDP averages are the gradients of the whole
  batch, the same as one process computes (up to the rounding of the all-reduce);
- metrics are all-reduced (:func:`all_reduce_sums`); validation and the early-stopping
  decision happen on rank 0 and are broadcast (:func:`broadcast_object`);
- only rank 0 writes run folders (:func:`is_writer`, which :mod:`gatelab.train.runs` checks
  before every write) and holds their lock; a resumed state is read by rank 0 and sent
  to the others.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from gatelab.errors import GatelabError

__all__ = [
    "RankFailedError",
    "active",
    "all_reduce_sums",
    "broadcast_object",
    "describe",
    "end_rank",
    "from_writer",
    "init",
    "is_writer",
    "joined",
    "launch",
    "local_rank",
    "rank",
    "restart_count",
    "shard",
    "to_cpu",
    "world_size",
]

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "GATELAB_DIST_TIMEOUT"  # seconds a collective may wait for a slow rank
# how long the other ranks wait for rank 0's from_writer work (reading the data)
WRITER_WAIT = datetime.timedelta(days=7)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r}; expected an integer (torchrun sets it)"
        ) from None


# True once gatelab itself joined the process group (init). A group the user's own code
# set up is not gatelab's: a script that trains on rank 0 only must not meet collectives
# its other ranks never enter.
_joined = False
# [store, calls so far] of from_writer, once init() has joined a group (empty otherwise)
_writer_store: list = []


def _ours() -> bool:
    return _joined and dist.is_available() and dist.is_initialized()


def active() -> bool:
    """True in a process group of more than one rank that gatelab has joined (init)."""
    return _ours() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of ranks: gatelab's process group's, else ``WORLD_SIZE``, else 1."""
    if _ours():
        return dist.get_world_size()
    if dist.is_available() and dist.is_initialized():
        return 1  # a group of the user's own: gatelab trains as a single process
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank in gatelab's group, else ``RANK`` (0 without torchrun)."""
    if _ours():
        return dist.get_rank()
    return _env_int("RANK", 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return _env_int("LOCAL_RANK", 0) if world_size() > 1 else 0


def restart_count() -> int:
    """How often torchrun's elastic agent has restarted this job's workers (0 at first)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def is_writer() -> bool:
    """True where run folders may be written: a single process, or rank 0."""
    return rank() == 0


def _terminate(signum, frame) -> None:
    # torchrun ends the surviving ranks with SIGTERM when one fails; raising here runs the
    # `finally` blocks, so rank 0 releases the run folder's lock and leaves no temp file
    raise SystemExit(128 + signum)


def init(backend: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment, once.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None picks nccl where CUDA is available, gloo
            otherwise.

    Returns:
        True in a job of more than one rank (now joined), False in a single process
        (``WORLD_SIZE`` unset or 1), where nothing changes.

    Raises:
        ValueError: ``WORLD_SIZE`` set but ``RANK``, ``MASTER_ADDR`` or ``MASTER_PORT``
            missing or malformed, or an unknown ``backend``.
    """
    global _joined
    if world_size() <= 1:
        return False
    if dist.is_initialized():
        return _joined
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; start "
            "distributed jobs with torchrun (or gatelab train ... --nproc N)"
        )
    r, n = _env_int("RANK", 0), world_size()
    if not 0 <= r < n:
        raise ValueError(f"RANK={r}; expected 0 <= RANK < WORLD_SIZE={n}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend={backend!r}; expected 'gloo' or 'nccl'")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(seconds=_env_int(TIMEOUT_ENV, 1800))
    # The store every rank meets at: torchrun's agent hosts one (TORCHELASTIC_USE_AGENT_STORE)
    # that outlives an elastic restart, so each attempt's keys get a prefix of their own;
    # without an agent, rank 0 hosts it.
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        _env_int("MASTER_PORT", 0),
        n,
        is_master=r == 0 and not agent,
        timeout=timeout,
    )
    store = dist.PrefixStore(f"gatelab/attempt{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=r, world_size=n, timeout=timeout)
    _joined = True
    _writer_store[:] = [dist.PrefixStore("gatelab/from_writer", store), 0]
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(_leave)
    logger.info("rank %d of %d joined the process group (%s)", r, n, backend)
    return True


def _leave() -> None:
    """At exit, leave the group :func:`init` joined and drop its store. A process that
    exits with them alive tears them down in the interpreter's last steps, where a rank
    aborted in one of three runs under load ("terminate called without an active
    exception", exit code -6 after its last line of output), which torchrun reports as a
    failed job. Leaving made that rarer, not impossible: see :func:`end_rank`."""
    global _joined
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False
    _writer_store.clear()


def joined() -> bool:
    """True in a rank that joined a group through :func:`init` and has not left it."""
    return _joined


def end_rank(code: int) -> NoReturn:
    """End a rank that joined through :func:`init` with exit status ``code``, skipping the
    interpreter's teardown.

    What a normal exit does first still happens: non-daemon threads are joined, the exit
    handlers run (:func:`_leave` among them, and ``logging.shutdown``), the output is
    flushed; then ``os._exit``. Leaving the group is not enough: gloo's threads outlive
    ``destroy_process_group`` (``/proc`` still lists its ``gloo_tcp_loop`` and two
    ``pt_gloo_runloop`` threads after it: torch keeps references to the group and frees it
    in the interpreter's last steps), and there a rank aborted at times ("terminate called
    without an active exception", exit code -6 after its last output, after the run folder
    was whole): in 2 of 28 runs of three distributed tests (the two kill tests and the exit
    test), and in CI. ``code`` is taken as Python's own exit takes it (modulo 256; 255
    beyond 64 bits).
    """
    status = code & 0xFF if -(2**63) <= code < 2**63 else 0xFF
    try:
        threading._shutdown()  # as the interpreter's exit, before the exit handlers
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing more can be written
                pass
    finally:  # a signal (torchrun's SIGTERM) meanwhile must not lead back into the teardown
        os._exit(status)


def device() -> torch.device:
    """Where this rank's tensors for collectives live (its GPU under nccl, else the CPU)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(index: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's part of a global batch of indices: every ``world_size``-th one from
    ``rank`` on (the batch is sorted by length, so each rank gets long and short ones
    alike). Parts differ in size by at most one; a rank may get none of a short batch.

    Args:
        index: ``(B,)`` the global batch.
        rank: in ``[0, world_size)``.
        world_size: the number of ranks.

    Returns:
        ``(ceil((B - rank) / world_size),)`` indices.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}; expected 0 <= rank < world_size={world_size}")
    return index[rank::world_size]


def all_reduce_sums(values: list[float]) -> list[float]:
    """The sums over all ranks of each of ``values`` (float64; unchanged in one process)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def describe(sections: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``config.json`` records of a distributed run: ``{"world_size": N,
    "distributed": {"backend", "world_size", "global_batch_size", "per_rank_batch_size"}}``
    (the batch sizes where ``sections["train"]["batch_size"]`` gives the global batch)."""
    n = world_size()
    info: dict[str, Any] = {
        "backend": dist.get_backend() if active() else None,
        "world_size": n,
    }
    train = (sections or {}).get("train")
    batch = train.get("batch_size") if isinstance(train, dict) else None
    if isinstance(batch, int):
        info["global_batch_size"] = batch
        info["per_rank_batch_size"] = -(-batch // n)  # ceil: the largest shard of a batch
    return {"world_size": n, "distributed": info}


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (``obj`` itself in one process). Send CPU
    tensors. The ranks of one job trust each other: this pickles."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=device())
    return box[0]


def from_writer(make: Callable[[], Any]) -> Any:
    """``make()`` run on rank 0 only, its result sent to every rank (:func:`broadcast_object`;
    ``make()`` itself in one process). An exception ``make`` raises on rank 0 is sent
    instead and raised on every rank, so no rank waits for a result that never comes."""
    if not active():
        return make()
    result, error = None, None
    key = _next_writer_key()
    if is_writer():
        try:
            result = make()
        except Exception as err:  # sent on, raised on every rank below
            error = err
        finally:
            if key is not None:
                _writer_store[0].set(key, b"done")
    elif key is not None:
        # Rank 0's work here is reading the data (any size: minutes to hours), longer than
        # a collective may wait (TIMEOUT_ENV); the others wait on the store without that
        # bound. torchrun ends them if rank 0 fails.
        _writer_store[0].wait([key], WRITER_WAIT)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def _next_writer_key() -> str | None:
    """The store key of this :func:`from_writer` call (calls come in the same order on
    every rank); None for a group gatelab did not start (no store to wait on)."""
    if not _writer_store:
        return None
    _writer_store[1] += 1
    return f"call{_writer_store[1]}"


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if active():
        dist.barrier()


class RankFailedError(GatelabError, RuntimeError):
    """A rank of a job :func:`launch` started failed; the message names it."""

    def __init__(self, message: str, ranks: list[int]) -> None:
        super().__init__(message)
        self.ranks = ranks


def launch(argv: list[str], nproc: int, max_restarts: int = 0, module: str = "gatelab") -> None:
    """Run ``python -m {module} {argv}`` on ``nproc`` ranks of this machine through
    ``torch.distributed.run`` (torchrun's own launcher and elastic agent, standalone
    rendezvous on a free local port).

    Args:
        argv: the module's command line.
        nproc: ranks (processes) to start, >= 1.
        max_restarts: how often the elastic agent restarts all ranks after one fails
            (each restart sees ``TORCHELASTIC_RESTART_COUNT`` > 0 and should resume).
        module: the module to run.

    Raises:
        RankFailedError: a rank failed (after the restarts); the message names the first
            one to fail, its exit code and pid.
    """
    for name, value, low in (("nproc", nproc, 1), ("max_restarts", max_restarts, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}; expected an int >= {low}")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}",
            "--module",
            module,
            *argv,
        ]
    )
    try:
        run(args)
    except ChildFailedError as err:
        first, failure = err.get_first_failure()
        others = sorted(r for r in err.failures if r != first)
        how = (
            f"was killed by signal {-failure.exitcode}"
            if failure.exitcode < 0
            else f"failed with exit code {failure.exitcode} (its output is above)"
        )
        message = (
            f"rank {first} of {nproc} (pid {failure.pid}) {how}"
            + (f", after {max_restarts} restart(s)" if max_restarts else "")
            + (f"; rank(s) {', '.join(map(str, others))} stopped with it" if others else "")
        )
        raise RankFailedError(message, [first, *others]) from None


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (in dicts, lists, tuples) detached and on the CPU: what
    :func:`broadcast_object` sends."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
