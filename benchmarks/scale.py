"""Scaling the char LM past memory: peak memory against corpus size, and tokens/s.

For each corpus size (default 100 MB and 1 GB, words in ASCII with a few multi-byte
characters up front, written to a temporary folder and deleted after), a child process
reads it with the streaming reader (:class:`gatelab.data.corpus.CharCorpus`: one chunked pass
for the vocabulary, ids encoded to a temporary file, windows read back by ``pread``) and
trains ``--steps`` TBPTT steps; it reports its peak RSS (``ru_maxrss``) and its RSS after
``import torch`` (the interpreter's own footprint). The peer is the reader before
streaming (the whole text, a Python list of ids, an int64 tensor), measured on
``--old-size`` only: it needs ~18 bytes per byte of text.

Tokens/s: ``--rounds`` rounds of ``--steps`` steps, interleaved (alternating which goes
first) between batches read from disk (``TokenIds``) and batches from an in-memory
tensor of the same ids, median round;
their ratio is the cost of streaming. The machine has 2 cores shared with other users:
the numbers are for 1 thread.

1 rank against 2: ``gatelab train char-lm`` on a ``--rank-size`` MB corpus through the
command line, one epoch cut by a ``--rank-minutes`` budget, 1 rank with 2 threads against
``--nproc 2`` with 1 thread each (each rank reads only its streams), ``--rank-rounds``
rounds interleaved; the tokens/s of all ranks together that the run's history records.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/scale.py [--sizes 100 1000]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/scale.py --skip-memory   # 1 vs 2 ranks only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 10**6

CHILD = r"""
import json, resource, statistics, sys, time
import torch
import torch.nn.functional as F
from gatelab.data.batching import stream_batches
from gatelab.data.corpus import CharCorpus, split_point
from gatelab.data.vocab import CharVocab
from gatelab.models.charlm import CharLM, detach_state

path, mode, steps, rounds, tmp = sys.argv[1:6]
steps, rounds = int(steps), int(rounds)
torch.set_num_threads(1)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base, t0 = rss(), time.perf_counter()
if mode == "old":
    from gatelab.data.corpus import read_text_corpus
    text = read_text_corpus(path)
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text[: split_point(len(text), 0.1)])
    del text
    read_s = time.perf_counter() - t0
else:
    corpus = CharCorpus(path, cache_dir=tmp)
    scan_s = time.perf_counter() - t0
    vocab = corpus.vocab
    ids, valid = corpus.split(0.1)
    read_s = time.perf_counter() - t0
B, T = 32, 64
torch.manual_seed(0)
model = CharLM(vocab, embedding_dim=16, hidden_size=128, num_layers=1)
opt = torch.optim.Adam(model.parameters(), 1e-3)

def train(batches, n):
    state, start = None, time.perf_counter()
    for k, (x, y) in enumerate(batches):
        if k == n:
            break
        logits, state = model(x, detach_state(state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(); loss.backward(); opt.step()
    return n * B * T / (time.perf_counter() - start)

out = {"base": base, "read_s": read_s, "n": len(ids), "vocab": len(vocab)}
if mode == "new":
    out["scan_s"] = scan_s
    disk = stream_batches(ids, B, T)
    train(disk, steps)  # warm-up
    out["peak_after_warmup"] = rss()
    memory = torch.from_numpy(ids.read(0, B * T * steps * (rounds + 1) + 1)).long()
    mem_batches = stream_batches(memory, B, T)
    d, m = [], []
    for r in range(rounds):  # alternate which goes first: a busy machine drifts
        if r % 2:
            m.append(train(mem_batches, steps))
        d.append(train(disk, steps))
        if not r % 2:
            m.append(train(mem_batches, steps))
    out["tok_s_disk"], out["tok_s_memory"] = statistics.median(d), statistics.median(m)
    del memory, mem_batches
else:
    train(stream_batches(ids, B, T), steps)
out["peak"] = rss() if mode == "old" else out["peak_after_warmup"]
print(json.dumps(out))
"""


def write_corpus(path: Path, size: int) -> None:
    """``size`` bytes of words, a few multi-byte characters up front, in 1 MiB writes."""
    import random

    rng = random.Random(0)
    words = ["the", "gate", "forget", "cell", "input", "output", "lstm", "state", "of"]
    block = (" ".join(rng.choice(words) for _ in range(200_000)) + ".\n").encode()
    head = "café naïve 中文 😀\n".encode()
    with open(path, "wb") as f:
        f.write(head)
        done = len(head)
        while done < size:
            piece = block[: min(len(block), size - done)]
            f.write(piece)
            done += len(piece)


def child(path: Path, mode: str, args, tmp: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-c", CHILD, str(path), mode, str(args.steps), str(args.rounds), tmp]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"child failed ({mode}, {path}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cli_tokens_per_s(corpus: Path, out: Path, nproc: int, minutes: float) -> float:
    """Training tokens/s of ``gatelab train char-lm`` on ``nproc`` ranks (all ranks
    together, as the run's history records them) in one epoch cut by a time budget."""
    threads = "2" if nproc == 1 else "1"  # the 2 cores: 1 rank x 2 threads, 2 ranks x 1
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": threads}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "gatelab", "train", "char-lm", "--data", str(corpus)]
    cmd += ["--out", str(out), "--embedding-dim", "16", "--hidden-size", "128", "--layers", "1"]
    cmd += ["--batch-size", "32", "--seq-len", "64", "--epochs", "1", "--minutes", str(minutes)]
    cmd += ["--quiet"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"{nproc}-rank run failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    history = json.loads((out / "checkpoint.json").read_text())["fit"]["history"]
    return history[-1]["tokens_per_s"]


def ranks(args) -> None:
    """1 rank against 2 through the command line (each rank reads only its streams),
    ``--rank-rounds`` rounds interleaved, alternating which goes first."""
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="gatelab-ranks-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        write_corpus(corpus, args.rank_size * MB)
        seen: dict[int, list[float]] = {1: [], 2: []}
        for k in range(args.rank_rounds):
            for nproc in (1, 2) if k % 2 == 0 else (2, 1):
                out = Path(tmp) / f"run-{nproc}-{k}"
                seen[nproc].append(cli_tokens_per_s(corpus, out, nproc, args.rank_minutes))
                print(
                    f"  round {k + 1}, {nproc} rank(s): {seen[nproc][-1]:.0f} tokens/s", flush=True
                )
        best = {n: max(v) for n, v in seen.items()}
        print(
            f"char LM, {args.rank_size} MB corpus, global batch 32 x 64: 1 rank (2 threads) "
            f"{best[1]:.0f} tokens/s, 2 ranks (1 thread each) {best[2]:.0f} tokens/s (best of "
            f"{args.rank_rounds}): 2 ranks / 1 rank = {best[2] / best[1]:.2f}x (the same 2 cores)"
        )


def memory(args) -> None:
    """Peak memory of the old reader and the streamed one, tokens/s from disk and memory."""
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="gatelab-scale-") as tmp:
        f = Path(tmp) / "corpus.txt"
        write_corpus(f, args.old_size * MB)
        old = child(f, "old", args, tmp)
        new = child(f, "new", args, tmp)
        grow_old, grow_new = old["peak"] - old["base"], new["peak"] - new["base"]
        print(
            f"{args.old_size:>5} MB  old reader: peak RSS {old['peak'] / MB:7.0f} MB "
            f"(+{grow_old / MB:.0f} MB = {grow_old / (args.old_size * MB):.1f} x the file); "
            f"streamed: {new['peak'] / MB:.0f} MB (+{grow_new / MB:.0f} MB); "
            f"ratio of growths {grow_old / max(grow_new, 1):.0f}x"
        )
        print(
            "  size   peak RSS   growth over import   scan s  scan+encode s   tok/s disk  "
            "tok/s memory  disk/memory"
        )
        for size in args.sizes:
            write_corpus(f, size * MB)
            r = child(f, "new", args, tmp)
            f.unlink()
            print(
                f"{size:>5} MB {r['peak'] / MB:7.0f} MB {(r['peak'] - r['base']) / MB:12.0f} MB "
                f"{r['scan_s']:14.1f} {r['read_s']:13.1f} {r['tok_s_disk']:12.0f} "
                f"{r['tok_s_memory']:12.0f} {r['tok_s_disk'] / r['tok_s_memory']:11.2f}",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="corpus MB")
    p.add_argument("--old-size", type=int, default=50, help="MB read by the old reader")
    p.add_argument("--steps", type=int, default=20, help="TBPTT steps per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--tmp", type=Path, default=None, help="where the corpora go")
    p.add_argument("--rank-rounds", type=int, default=2, help="1- vs 2-rank rounds (0: none)")
    p.add_argument("--rank-size", type=int, default=5, help="MB of the 1- vs 2-rank corpus")
    p.add_argument("--rank-minutes", type=float, default=0.5, help="training time per run")
    p.add_argument("--skip-memory", action="store_true", help="only the 1- vs 2-rank runs")
    args = p.parse_args()
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    if not args.skip_memory:
        memory(args)
    if args.rank_rounds:
        ranks(args)
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
