"""A grid-world maze for deep Q-learning examples: no gym, no randomness unless asked.

The layout is a list of equal-length strings: ``#`` wall, ``.`` floor, ``S`` start,
``G`` goal. The agent moves one cell per step (actions 0 up, 1 right, 2 down, 3 left).
Moving into a wall or off the grid leaves it in place.

Rewards: ``goal_reward`` for the step that reaches the goal (the episode ends),
``wall_reward`` for a blocked move, ``step_reward`` for any other move. After
``max_steps`` steps the episode ends without the goal and ``truncated`` is set: a
training loop should still bootstrap from that state (it is a time limit, not a
terminal state).

Observations (``observation``), float32 numpy arrays:
- "onehot": (H·W,), 1 at the agent's cell (row-major), as the seed article's agent expects;
- "grid": (3, H, W) planes: walls, agent, goal (for a convolutional Q-network).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

import numpy as np

from layerwise.errors import LayerwiseError
from layerwise.models.base import check

ACTIONS = ("up", "right", "down", "left")
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
OBSERVATIONS = ("onehot", "grid")

# 5×5; the shortest path from S to G takes 8 steps.
DEFAULT_LAYOUT = (
    "S.#..",
    "..#.#",
    "....#",
    "#.#..",
    "..#.G",
)

# 10×10 with 37 walls: 63 free cells, all connected; S to G takes 18 steps, the farthest
# cell is 19 steps from G. The dqn-maze example's maze.
MAZE_10X10 = (
    "S...#.....",
    ".##.#.###.",
    ".#..#...#.",
    ".#.###.##.",
    ".#.....#..",
    ".####.##.#",
    "......#...",
    "##.##.#.#.",
    "...#....#.",
    ".#...##..G",
)

#: the built-in mazes by name
MAZES = {"5x5": DEFAULT_LAYOUT, "10x10": MAZE_10X10}


def maze_layout(name: str) -> tuple[str, ...]:
    """A built-in maze's layout by name (see :data:`MAZES`)."""
    from layerwise.errors import UnknownNameError

    if name not in MAZES:
        raise UnknownNameError(f"unknown maze {name!r}; expected one of {', '.join(MAZES)}")
    return MAZES[name]


class GridMaze:
    """A maze episode at a time: ``reset()`` → obs, ``step(action)`` → (obs, reward, done)."""

    n_actions = len(ACTIONS)

    def __init__(
        self,
        layout: Sequence[str] = DEFAULT_LAYOUT,
        *,
        max_steps: int = 50,
        observation: str = "onehot",
        goal_reward: float = 1.0,
        step_reward: float = -0.01,
        wall_reward: float = -0.05,
        random_start: bool = False,
        seed: int | None = None,
    ):
        rows = [layout] if isinstance(layout, str) else list(layout)
        name = type(self).__name__
        check(
            len(rows) > 0 and all(isinstance(r, str) and r for r in rows),
            name,
            "layout",
            "non-empty rows of text",
            layout,
        )
        check(len({len(r) for r in rows}) == 1, name, "layout", "rows of equal length", [len(r) for r in rows])
        bad = sorted(set("".join(rows)) - set("#.SG"))
        check(not bad, name, "layout", "only the characters # . S G", "".join(bad))
        text = "".join(rows)
        check(text.count("S") == 1, name, "layout", "exactly one start S", text.count("S"))
        check(text.count("G") == 1, name, "layout", "exactly one goal G", text.count("G"))
        check(isinstance(max_steps, int) and max_steps > 0, name, "max_steps", "a positive integer", max_steps)
        check(observation in OBSERVATIONS, name, "observation", f"one of {', '.join(OBSERVATIONS)}", observation)
        self.layout = tuple(rows)
        self.height, self.width = len(rows), len(rows[0])
        self.walls = np.array([[c == "#" for c in r] for r in rows], dtype=bool)  # (H, W)
        self.start = next((i, r.index("S")) for i, r in enumerate(rows) if "S" in r)
        self.goal = next((i, r.index("G")) for i, r in enumerate(rows) if "G" in r)
        check(
            self.shortest_path_length() is not None, name, "layout", "a goal reachable from the start", "\n".join(rows)
        )
        self.max_steps = max_steps
        self.observation = observation
        self.goal_reward, self.step_reward, self.wall_reward = (
            float(goal_reward),
            float(step_reward),
            float(wall_reward),
        )
        self.random_start = random_start
        self._rng = random.Random(seed)
        self.position: tuple[int, int] = self.start
        self.steps = 0
        self.done = True  # reset() starts the first episode
        self.truncated = False

    @property
    def obs_shape(self) -> tuple[int, ...]:
        if self.observation == "onehot":
            return (self.height * self.width,)
        return (3, self.height, self.width)

    def free_cells(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.height) for c in range(self.width) if not self.walls[r, c]]

    def reset(self, seed: int | None = None, start: tuple[int, int] | None = None) -> np.ndarray:
        """Start an episode (at ``start``, else at S, or at a random free non-goal cell if
        random_start); seed reseeds."""
        if seed is not None:
            self._rng = random.Random(seed)
        if start is not None:
            start = (int(start[0]), int(start[1]))
            if not (0 <= start[0] < self.height and 0 <= start[1] < self.width) or self.walls[start]:
                raise LayerwiseError(f"GridMaze.reset: start {start} is not a free cell of the maze")
            self.position = start
        elif self.random_start:
            self.position = self._rng.choice([p for p in self.free_cells() if p != self.goal])
        else:
            self.position = self.start
        self.steps = 0
        self.done = False
        self.truncated = False
        return self.observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Move; returns (observation, reward, done). Call reset() after done."""
        if self.done:
            raise LayerwiseError("GridMaze.step: the episode is over; call reset() first")
        if not isinstance(action, (int, np.integer)) or not 0 <= action < self.n_actions:
            raise LayerwiseError(
                f"GridMaze.step: action {action!r} is not one of "
                + ", ".join(f"{i} ({a})" for i, a in enumerate(ACTIONS))
            )
        dr, dc = _MOVES[int(action)]
        r, c = self.position[0] + dr, self.position[1] + dc
        blocked = not (0 <= r < self.height and 0 <= c < self.width) or self.walls[r, c]
        if not blocked:
            self.position = (r, c)
        self.steps += 1
        if self.position == self.goal:
            reward, self.done = self.goal_reward, True
        else:
            reward = self.wall_reward if blocked else self.step_reward
            if self.steps >= self.max_steps:
                self.done = self.truncated = True
        return self.observe(), reward, self.done

    def get_state(self) -> dict:
        """The episode and the random-start generator as JSON (for a checkpoint)."""
        version, internal, gauss = self._rng.getstate()
        return {"position": list(self.position), "steps": self.steps, "done": self.done, "truncated": self.truncated,
                "rng": [version, list(internal), gauss]}

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""
        self.position = (int(state["position"][0]), int(state["position"][1]))
        self.steps, self.done, self.truncated = int(state["steps"]), bool(state["done"]), bool(state["truncated"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

    def observe(self) -> np.ndarray:
        r, c = self.position
        if self.observation == "onehot":
            obs = np.zeros(self.height * self.width, dtype=np.float32)  # (H·W,)
            obs[r * self.width + c] = 1.0
            return obs
        obs = np.zeros((3, self.height, self.width), dtype=np.float32)  # (3, H, W)
        obs[0] = self.walls
        obs[1, r, c] = 1.0
        obs[2][self.goal] = 1.0
        return obs

    def shortest_path_length(self, start: tuple[int, int] | None = None) -> int | None:
        """Fewest steps from start (default S) to G by breadth-first search, or None if unreachable."""
        start = self.start if start is None else start
        seen = {start}
        queue = deque([(start, 0)])
        while queue:
            (r, c), d = queue.popleft()
            if (r, c) == self.goal:
                return d
            for dr, dc in _MOVES:
                n = (r + dr, c + dc)
                if 0 <= n[0] < self.height and 0 <= n[1] < self.width and not self.walls[n] and n not in seen:
                    seen.add(n)
                    queue.append((n, d + 1))
        return None

    def render(self) -> str:
        """The maze as text with the agent as A."""
        rows = [list(r.replace("S", ".")) for r in self.layout]
        rows[self.position[0]][self.position[1]] = "A"
        return "\n".join("".join(r) for r in rows)
