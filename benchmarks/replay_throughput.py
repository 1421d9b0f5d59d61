"""Replay throughput and memory: the R2D2 prioritized sequence replay (buffer.prioritized).

What is measured:
1. Throughput vs capacity (1e3, 1e4, 1e5 items), PrioritizedSequenceReplay with no rate
   limiter, real SequenceItems (a pool reused by reference: the buffer stores references, so
   item size does not enter these timings):
   - insert_fill: items/s of `add` in chunks of --chunk while the buffer fills from empty;
   - insert_full: items/s of `add` once full (every insert evicts the oldest: the steady state);
   - sample: items/s of `sample(--batch)` (prioritized, IS weights on);
   - sample_update: items/s of one learner round, `sample` then `update_priorities` of the batch;
   - index_bytes_per_slot: the buffer's own arrays (keys, versions, priorities, sum and min
     trees, the slot list) per slot, items excluded.
   Each timing is the median over --repeats timed runs.
2. Memory per stored item (buffer.sequences.nbytes = pickled size, what Ray ships and the
   buffer keeps) for episodes of T turns (10, 50, 200), cut into items of
   burn_in + trace + 1 turns every sequence_period turns:
   - stored_state: the R2D2 item, one [2, H] float32 LSTM state (h, c) per item;
   - full_history: the same items without a state, where each position's observation is the
     whole history o_1 a_1 ... o_t (the POMDP state written out; seed 000 section 2.3): an item
     grows with t, an episode with T^2.
   Turn texts are fixed-length synthetic strings (--obs-chars, --act-chars).

Run (from the repository root):
    .venv/bin/python benchmarks/replay_throughput.py            # full: capacities 1e3..1e5, T 10/50/200
    .venv/bin/python benchmarks/replay_throughput.py --quick    # smoke: capacities 1e3, 1e4; T 10, 50
Writes benchmarks/results/replay_throughput.json (or --out PATH).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C
from shoal.buffer.prioritized import PrioritizedSequenceReplay
from shoal.buffer.sequences import cut_episode, item_length, nbytes
from shoal.types import Episode, Turn

NAME = "replay_throughput"


def make_episode(
    num_turns: int, obs_chars: int, act_chars: int, hidden: int, seed: int = 0
) -> tuple[Episode, np.ndarray]:
    """A synthetic text episode and its [T, 2, hidden] float32 states entering each turn."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))

    def text(n: int) -> str:
        return "".join(rng.choice(letters, size=n))

    turns = [Turn(text(obs_chars), text(act_chars), float(rng.normal()), t == num_turns - 1) for t in range(num_turns)]
    states = rng.normal(size=(num_turns, 2, hidden)).astype(np.float32)
    return Episode(f"bench-{num_turns}-{seed}", "synthetic", turns, policy_version=0), states


def with_full_histories(item: Any, episode: Episode) -> Any:
    """The same item storing the full history text at every position and no recurrent state."""
    turns = episode.turns

    def history(i: int) -> str:
        return " ".join(f"{t.observation} {t.action}" for t in turns[:i]) + " " + turns[i].observation

    obs = [history(item.start + p) if 0 <= item.start + p < len(turns) else "" for p in range(len(item.observations))]
    return replace(item, observations=obs, start_state=None)


# ---- throughput --------------------------------------------------------------------------------


def _rate(n_items: int, seconds: float) -> float:
    return n_items / seconds if seconds > 0 else float("nan")


def _fill(buf: PrioritizedSequenceReplay, pool: list[Any], n: int, chunk: int) -> float:
    """Seconds to add n items in chunks (pool reused by reference)."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        start = done % (len(pool) - chunk)
        buf.add(pool[start : start + k])
        done += k
    return time.perf_counter() - t0


def _sample_loop(
    buf: PrioritizedSequenceReplay, batch: int, rounds: int, update: bool, rng: np.random.Generator
) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        b = buf.sample(batch, learner_version=0)
        if update:
            buf.update_priorities(b.keys, rng.exponential(size=batch))
    return time.perf_counter() - t0


def index_bytes_per_slot(buf: PrioritizedSequenceReplay) -> float:
    arrays = [buf._keys, buf._versions, buf._priorities, buf._sum.tree, buf._min.tree]
    return (sum(a.nbytes for a in arrays) + 8 * len(buf._items)) / buf.capacity


def throughput_row(capacity: int, pool: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    fills, fulls, samples, rounds_s = [], [], [], []
    rng = np.random.default_rng(0)
    for rep in range(args.repeats):
        buf = PrioritizedSequenceReplay(capacity, seed=rep)
        fills.append(_rate(capacity, _fill(buf, pool, capacity, args.chunk)))
        n_full = min(capacity, args.full_inserts)
        fulls.append(_rate(n_full, _fill(buf, pool, n_full, args.chunk)))
        buf.update_priorities(range(buf.inserts - capacity, buf.inserts), rng.exponential(size=capacity))
        samples.append(_rate(args.batch * args.rounds, _sample_loop(buf, args.batch, args.rounds, False, rng)))
        rounds_s.append(_rate(args.batch * args.rounds, _sample_loop(buf, args.batch, args.rounds, True, rng)))
    return {
        "capacity": capacity,
        "insert_fill_items_per_s": C.median(fills),
        "insert_full_items_per_s": C.median(fulls),
        "sample_items_per_s": C.median(samples),
        "sample_update_items_per_s": C.median(rounds_s),
        "index_bytes_per_slot": index_bytes_per_slot(buf),
    }


# ---- memory ------------------------------------------------------------------------------------


def memory_row(num_turns: int, args: argparse.Namespace) -> dict[str, Any]:
    ep, states = make_episode(num_turns, args.obs_chars, args.act_chars, args.hidden, seed=num_turns)
    items = cut_episode(ep, states, args.burn_in, args.trace, args.period)
    stored = [nbytes(it) for it in items]
    history = [nbytes(with_full_histories(it, ep)) for it in items]
    return {
        "turns": num_turns,
        "items": len(items),
        "stored_state_bytes_per_item": float(np.mean(stored)),
        "full_history_bytes_per_item": float(np.mean(history)),
        "full_history_max_bytes_per_item": float(max(history)),
        "stored_state_bytes_per_episode": int(sum(stored)),
        "full_history_bytes_per_episode": int(sum(history)),
        "history_over_state": sum(history) / sum(stored),
    }


THROUGHPUT_COLUMNS = [
    ("capacity", "capacity", "d"),
    ("insert_fill_items_per_s", "insert (filling) items/s", ".0f"),
    ("insert_full_items_per_s", "insert (full, evicting) items/s", ".0f"),
    ("sample_items_per_s", "sample items/s", ".0f"),
    ("sample_update_items_per_s", "sample+update items/s", ".0f"),
    ("index_bytes_per_slot", "index bytes/slot", ".1f"),
]
MEMORY_COLUMNS = [
    ("turns", "T", "d"),
    ("items", "items", "d"),
    ("stored_state_bytes_per_item", "stored state B/item", ".0f"),
    ("full_history_bytes_per_item", "full history B/item (mean)", ".0f"),
    ("full_history_max_bytes_per_item", "full history B/item (max)", ".0f"),
    ("stored_state_bytes_per_episode", "stored state B/episode", "d"),
    ("full_history_bytes_per_episode", "full history B/episode", "d"),
    ("history_over_state", "history / state", ".2f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: capacities 1e3, 1e4; T 10, 50; fewer rounds")
    p.add_argument("--capacities", default="1000,10000,100000")
    p.add_argument("--turns", default="10,50,200", help="episode lengths T for the memory table")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--chunk", type=int, default=32, help="items per add call")
    p.add_argument("--rounds", type=int, default=300, help="sample calls per timed run")
    p.add_argument("--full-inserts", type=int, default=20000, help="inserts timed on a full buffer (at most capacity)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--burn-in", type=int, default=4)
    p.add_argument("--trace", type=int, default=8)
    p.add_argument("--period", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512, help="LSTM size: the state is [2, hidden] float32")
    p.add_argument("--obs-chars", type=int, default=64)
    p.add_argument("--act-chars", type=int, default=8)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.capacities, args.turns, args.rounds, args.repeats, args.full_inserts = "1000,10000", "10,50", 50, 1, 2000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    C.single_thread_env()
    ep, states = make_episode(400, args.obs_chars, args.act_chars, args.hidden)
    pool = cut_episode(ep, states, args.burn_in, args.trace, args.period)
    capacities = [int(float(c)) for c in args.capacities.split(",")]
    throughput = [throughput_row(c, pool, args) for c in capacities]
    memory = [memory_row(int(t), args) for t in args.turns.split(",")]
    config = {
        k: getattr(args, k)
        for k in (
            "batch",
            "chunk",
            "rounds",
            "repeats",
            "burn_in",
            "trace",
            "period",
            "hidden",
            "obs_chars",
            "act_chars",
        )
    }
    config["item_length"] = item_length(args.burn_in, args.trace)
    path = C.write_results(NAME, {"config": config, "throughput": throughput, "memory": memory}, args.quick, args.out)
    C.report(
        f"Replay throughput vs capacity (batch {args.batch}, add chunks of {args.chunk})",
        C.format_table(throughput, THROUGHPUT_COLUMNS),
        path,
    )
    title = (
        f"Memory per item: burn_in {args.burn_in} + trace {args.trace} + 1, period {args.period}, "
        f"state [2, {args.hidden}] float32, {args.obs_chars}-char observations"
    )
    print(f"\n{title}\n{C.format_table(memory, MEMORY_COLUMNS)}", flush=True)


if __name__ == "__main__":
    main()
