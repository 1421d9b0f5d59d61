"""Random-walk shortest paths (trlx "randomwalks", the ILQL sanity task) as a TextEnvironment.

A random digraph on `n_nodes` nodes named by letters ("a" = node 0 = the goal), each edge
present with probability `p_edge` (no self loops), drawn from `np.random.default_rng(graph_seed)`
as trlx does; the goal is absorbing. The draw is repeated until every node has an out-edge
and can reach the goal within `max_length` nodes (trlx only asks for out-edges; a start that
cannot reach the goal would make the score undefined).

One step per episode (as trlx: a prompt and one generated walk):
  reset(seed) -> the start node's letter (uniform over the non-goal nodes, from the seed).
  step(action) -> ("", reward, True, info). The action is the rest of the walk as letters
  ("cda"; blanks ignored). The walk is start + action letters; it ends at its first visit
  of the goal. Its length L = number of nodes up to and including the goal; a non-letter,
  a missing edge or never reaching the goal gives L = infinity.
  reward = (max_length - min(L, max_length)) / (max_length - shortest(start))  (trlx
  "optimality"): 1 for a shortest path, 0 for a failed walk, in [0, 1].
info: {"success": reached the goal, "length": L or -1, "shortest": shortest(start)}.

Scripted policies (`POLICIES`): "random_walk" (the trlx data policy: a uniform random
successor each step until the goal or max_length nodes), "optimal" (a shortest path),
"mediocre" (shortest path with probability 1/2, else a random walk), "random" (the
random walk, under the registry's usual name).

Register: `"random_walks": random_walks.RandomWalksEnv` in BUILTIN_ENVS and
`random_walks.RandomWalksEnv: random_walks.POLICIES` in _POLICIES (rollout/envs/registry.py).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

GOAL = 0


def node_letter(i: int) -> str:
    return chr(ord("a") + i)


def make_graph(n_nodes: int, p_edge: float, max_length: int, graph_seed: int) -> np.ndarray:
    """[n, n] bool adjacency (trlx's draw; goal absorbing); redrawn until every node reaches the goal."""
    if not 2 <= n_nodes <= 26:
        raise ValueError(f"n_nodes must be in [2, 26] (letters), got {n_nodes}")
    rng = np.random.default_rng(graph_seed)
    for _ in range(10_000):
        adj = rng.random((n_nodes, n_nodes)) > (1 - p_edge)
        np.fill_diagonal(adj, False)
        if not np.all(adj.sum(1)):
            continue
        adj[GOAL, :] = False
        adj[GOAL, GOAL] = True
        dist = shortest_lengths(adj)
        if all(0 < d <= max_length for d in dist[1:]):
            return adj
    raise ValueError(f"no graph with n_nodes={n_nodes}, p_edge={p_edge} reaches the goal within {max_length} nodes")


def shortest_lengths(adj: np.ndarray) -> list[int]:
    """Per node: nodes on a shortest path to the goal, both ends counted (goal: 1); 0 = unreachable."""
    n = adj.shape[0]
    dist = [0] * n
    dist[GOAL] = 1
    queue = deque([GOAL])
    while queue:
        v = queue.popleft()
        for u in range(n):
            if adj[u, v] and dist[u] == 0 and u != GOAL:
                dist[u] = dist[v] + 1
                queue.append(u)
    return dist


class RandomWalksEnv:
    """See the module docstring."""

    name = "random_walks"

    def __init__(self, n_nodes: int = 21, p_edge: float = 0.1, max_length: int = 10, graph_seed: int = 1002) -> None:
        self.n_nodes, self.max_length = n_nodes, max_length
        self.adj = make_graph(n_nodes, p_edge, max_length, graph_seed)
        self.shortest = shortest_lengths(self.adj)
        self.start = 1

    def reset(self, seed: int | None = None) -> str:
        self.start = random.Random(seed).randrange(1, self.n_nodes)
        return node_letter(self.start)

    def walk_length(self, start: int, action: str) -> int | None:
        """Nodes up to and including the first goal visit, or None (illegal / never reached)."""
        node, length = start, 1
        for ch in action.replace(" ", "").strip().lower():
            nxt = ord(ch) - ord("a")
            if not 0 <= nxt < self.n_nodes or not self.adj[node, nxt]:
                return None
            node, length = nxt, length + 1
            if node == GOAL:
                return length
        return None

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        length = self.walk_length(self.start, action if isinstance(action, str) else "")
        bound = self.max_length if length is None else min(length, self.max_length)
        reward = (self.max_length - bound) / (self.max_length - self.shortest[self.start])
        info = {
            "success": length is not None,
            "length": -1 if length is None else length,
            "shortest": self.shortest[self.start],
        }
        return "", float(reward), True, info

    def successors(self, node: int) -> list[int]:
        return [int(j) for j in np.nonzero(self.adj[node])[0]]

    def shortest_path(self, start: int) -> list[int]:
        """Nodes after `start` on one shortest path to the goal (smallest-letter tie break)."""
        path, node = [], start
        while node != GOAL:
            node = min(j for j in self.successors(node) if self.shortest[j] == self.shortest[node] - 1)
            path.append(node)
        return path


class RandomWalkPolicy:
    """The trlx data policy: uniform random successors until the goal or max_length nodes.
    With `p_optimal` > 0 a whole episode follows a shortest path with that probability."""

    def __init__(self, env: RandomWalksEnv, p_optimal: float = 0.0, name: str = "random_walk") -> None:
        self.env, self.p_optimal, self.name = env, p_optimal, name
        self.rng = random.Random(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def act(self, observation: str) -> str:
        start = ord(observation.strip()[0]) - ord("a")
        if self.rng.random() < self.p_optimal:
            return "".join(node_letter(j) for j in self.env.shortest_path(start))
        walk, node = [], start
        for _ in range(self.env.max_length - 1):
            node = self.rng.choice(self.env.successors(node))
            walk.append(node)
            if node == GOAL:
                break
        return "".join(node_letter(j) for j in walk)


POLICIES: dict[str, Callable[[RandomWalksEnv], Any]] = {
    "random_walk": RandomWalkPolicy,
    "random": lambda env: RandomWalkPolicy(env, name="random"),
    "optimal": lambda env: RandomWalkPolicy(env, p_optimal=1.0, name="optimal"),
    "mediocre": lambda env: RandomWalkPolicy(env, p_optimal=0.5, name="mediocre"),
}

__all__ = ["POLICIES", "RandomWalkPolicy", "RandomWalksEnv", "make_graph", "shortest_lengths"]
