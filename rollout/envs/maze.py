"""Text maze (LMRL-Gym "Maze"), fully observed (`maze_fo`) and partially observed (`maze_po`).

POMDP. Hidden state: the agent's cell in a fixed grid; the start cell is drawn from the reset
seed (any open cell but the goal). Actions (`legal_actions()`): up, down, left, right. A move
into a wall leaves the agent in place. Every action costs -1 except the one that reaches the
goal (0, episode ends, success); after `max_steps` actions (100, as LMRL-Gym) the episode ends
unsolved. Other text is illegal: `illegal_penalty` (-1), a message, no move.
  FO observation: "position 5,3. goal 8,6. walls: up, down."  (the state: an MDP)
  PO observation: "walls: up, down."  (local walls only: many cells look alike, so the
  agent must localise itself from the history of moves and walls)
Layouts: "double_t" (LMRL-Gym's 10x13 double-T maze, goal at the bottom of the stem) or
"generated" (a depth-first-search maze of `rows` x `cols` cells from `maze_seed`, goal in
the cell farthest from the top-left one). Optimal return from a start at distance d: -(d-1).
info: {"illegal": bool, "success": bool}.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from shoal.rollout.envs.base import Policy, RandomPolicy, parse_choice

Cell = tuple[int, int]
MOVES: dict[str, Cell] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
ACTIONS = list(MOVES)

DOUBLE_T = (
    "#############",
    "#.....#.....#",
    "###.#####.###",
    "###.#####.###",
    "###.#####.###",
    "###.......###",
    "######.######",
    "######.######",
    "######G######",
    "#############",
)


def generate_maze(rows: int, cols: int, seed: int) -> tuple[str, ...]:
    """A perfect maze (one path between any two cells) of rows x cols cells by randomized
    depth-first search; '#' wall, '.' open, 'G' goal (the cell farthest from (1, 1))."""
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError(f"a generated maze needs at least 2 cells, got rows={rows}, cols={cols}")
    grid = [["#"] * (2 * cols + 1) for _ in range(2 * rows + 1)]
    rng, stack, seen = random.Random(seed), [(0, 0)], {(0, 0)}
    grid[1][1] = "."
    while stack:
        r, c = stack[-1]
        nxt = [
            (r + dr, c + dc)
            for dr, dc in MOVES.values()
            if 0 <= r + dr < rows and 0 <= c + dc < cols and (r + dr, c + dc) not in seen
        ]
        if not nxt:
            stack.pop()
            continue
        nr, nc = rng.choice(nxt)
        grid[2 * nr + 1][2 * nc + 1] = grid[r + nr + 1][c + nc + 1] = "."
        seen.add((nr, nc))
        stack.append((nr, nc))
    dist = distances(tuple("".join(row) for row in grid), (1, 1))
    gr, gc = max(dist, key=lambda cell: (dist[cell], cell))
    grid[gr][gc] = "G"
    return tuple("".join(row) for row in grid)


def distances(layout: tuple[str, ...], source: Cell) -> dict[Cell, int]:
    """Breadth-first distances from `source` to every reachable open cell."""
    dist, queue = {source: 0}, deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            n = (r + dr, c + dc)
            if layout[n[0]][n[1]] != "#" and n not in dist:
                dist[n] = dist[(r, c)] + 1
                queue.append(n)
    return dist


class MazeEnv:
    """See the module docstring."""

    def __init__(
        self,
        fully_observed: bool = True,
        layout: str = "double_t",
        max_steps: int = 100,
        illegal_penalty: float = -1.0,
        rows: int = 4,
        cols: int = 5,
        maze_seed: int = 0,
        name: str | None = None,
    ) -> None:
        if layout == "double_t":
            self.layout = DOUBLE_T
        elif layout == "generated":
            self.layout = generate_maze(rows, cols, maze_seed)
        else:
            raise ValueError(f"layout must be 'double_t' or 'generated', got {layout!r}")
        self.fully_observed, self.max_steps, self.illegal_penalty = fully_observed, max_steps, illegal_penalty
        self.name = name or ("maze_fo" if fully_observed else "maze_po")
        self.goal = next((r, c) for r, row in enumerate(self.layout) for c, ch in enumerate(row) if ch == "G")
        self.goal_distance = distances(self.layout, self.goal)
        self.starts = sorted(cell for cell in self.goal_distance if cell != self.goal)
        self.position, self.steps, self.done = self.starts[0], 0, True

    def legal_actions(self) -> list[str]:
        return list(ACTIONS)

    def walls(self, cell: Cell) -> list[str]:
        """The directions in which `cell` has a wall next to it, in the order of ACTIONS."""
        return [a for a, (dr, dc) in MOVES.items() if self.layout[cell[0] + dr][cell[1] + dc] == "#"]

    def moved(self, cell: Cell, action: str) -> Cell:
        """Where `action` takes the agent from `cell` (the same cell when a wall blocks it)."""
        dr, dc = MOVES[action]
        n = (cell[0] + dr, cell[1] + dc)
        return cell if self.layout[n[0]][n[1]] == "#" else n

    def observe(self, cell: Cell) -> str:
        walls = "walls: " + (", ".join(self.walls(cell)) or "none") + "."
        if not self.fully_observed:
            return walls
        return f"position {cell[0]},{cell[1]}. goal {self.goal[0]},{self.goal[1]}. {walls}"

    def reset(self, seed: int | None = None) -> str:
        self.position = random.Random(seed).choice(self.starts)
        self.steps, self.done = 0, False
        return self.observe(self.position)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.steps += 1
        choice = parse_choice(action, ACTIONS)
        if choice is None:
            self.done = self.steps >= self.max_steps
            obs = f"invalid action {action!r:.40}: say up, down, left or right. " + self.observe(self.position)
            return obs, self.illegal_penalty, self.done, {"illegal": True, "success": False}
        self.position = self.moved(self.position, choice)
        if self.position == self.goal:
            self.done = True
            return "you reached the goal.", 0.0, True, {"illegal": False, "success": True}
        self.done = self.steps >= self.max_steps
        return self.observe(self.position), -1.0, self.done, {"illegal": False, "success": False}


# ---- scripted policies ---------------------------------------------------------------------


class MazeOraclePolicy:
    """Reads the true position from the environment (privileged: use it as the upper bound and
    as behaviour data) and takes a shortest-path move; with probability `epsilon` a uniform
    random move instead (epsilon=0: optimal; 0.5: mediocre)."""

    def __init__(self, env: MazeEnv, name: str = "optimal", epsilon: float = 0.0) -> None:
        self.env, self.name, self.epsilon = env, name, epsilon
        self.rng = random.Random(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def act(self, observation: str) -> str:
        if self.rng.random() < self.epsilon:
            return self.rng.choice(ACTIONS)
        here, dist = self.env.position, self.env.goal_distance
        return min(ACTIONS, key=lambda a: (dist[self.env.moved(here, a)], self.rng.random()))


class MazeBeliefPolicy:
    """Not privileged: knows the layout, not its position. Keeps the belief (the cells
    consistent with every observation so far). When every cell of the belief has the same
    shortest-path move it takes it; otherwise it takes the first move of the shortest move
    sequence whose observations would tell some of the cells apart (breadth-first search over
    beliefs: information gathering). On the FO maze the first observation pins the cell
    down, so it plays optimally; on the PO maze it pays a few steps to localise."""

    def __init__(self, env: MazeEnv, name: str = "belief", max_nodes: int = 20_000) -> None:
        self.env, self.name, self.max_nodes = env, name, max_nodes
        self.rng, self.belief, self.last_action = random.Random(0), list(env.starts), None

    def reset(self, seed: int | None = None) -> None:
        self.rng, self.belief, self.last_action = random.Random(seed), list(self.env.starts), None

    def _update(self, observation: str) -> None:
        env = self.env
        moved = (
            self.belief if self.last_action is None else sorted({env.moved(c, self.last_action) for c in self.belief})
        )
        self.belief = [c for c in moved if self._signature(c) == observation] or list(
            env.starts
        )  # surprise: start over

    def _signature(self, cell: Cell) -> str:
        return "goal" if cell == self.env.goal else self.env.observe(cell)

    def _splitting_move(self) -> str | None:
        """First move of the shortest sequence after which the belief's cells would not all
        have seen the same observations (None if there is none within max_nodes)."""
        start = tuple(self.belief)
        queue, seen = deque([(start, None)]), {start}
        while queue and len(seen) < self.max_nodes:
            node, first = queue.popleft()
            for a in ACTIONS:
                outcomes = tuple(sorted({self.env.moved(c, a) for c in node}))
                if len({self._signature(c) for c in outcomes}) > 1:
                    return first or a
                if outcomes not in seen:
                    seen.add(outcomes)
                    queue.append((outcomes, first or a))
        return None

    def act(self, observation: str) -> str:
        self._update(observation)
        env, dist = self.env, self.env.goal_distance
        best = {min(ACTIONS, key=lambda a: (dist[env.moved(c, a)], a)) for c in self.belief}
        action = best.pop() if len(best) == 1 else (self._splitting_move() or self.rng.choice(ACTIONS))
        self.last_action = action
        return action


POLICIES: dict[str, Callable[[MazeEnv], Policy]] = {
    "optimal": lambda env: MazeOraclePolicy(env, "optimal"),
    "belief": lambda env: MazeBeliefPolicy(env, "belief"),
    "mediocre": lambda env: MazeOraclePolicy(env, "mediocre", epsilon=0.5),
    "random": lambda env: RandomPolicy(env.legal_actions()),
}
