"""Deep Q-learning (Mnih et al. 2015) of a :class:`~layerwise.models.dqn.QNetwork` in a grid
maze, in the one training loop.

:class:`DQNTask` is a :class:`~layerwise.train.tasks.StepTask` whose training data is the
environment (a :class:`~layerwise.envs.GridMaze`). Each optimizer step is:

1. one environment step with an ε-greedy action of the online network (ε decays linearly
   from ``eps_start`` to ``eps_end`` over the first ``eps_decay`` of the run's steps);
2. the transition (s, a, r, s', terminal) goes into the :class:`ReplayBuffer` (a time-limit
   truncation is not terminal: the target still bootstraps from s');
3. one update on a minibatch of ``batch_size`` transitions drawn uniformly from the buffer:
   Huber loss between Q(s, a) and y = r + γ (1 − terminal) Q_target(s', a*) with a* the
   target network's argmax (or the online one's, ``double``: van Hasselt et al. 2016);
4. every ``target_update`` steps the target network copies the online one.

Before the first step the buffer is filled with ``learning_starts`` transitions of random
actions. The task's own state -- replay buffer, environment (position, step count and its
random-start generator), the exploration generator, the episode in progress and the
target network -- is checkpointed with the weights and both optimizer states, so a resumed
run repeats the uninterrupted one exactly.

Evaluation (``val_data``: the maze): the greedy policy from ``eval_starts`` start cells
drawn (seeded) from the free cells, and from every free cell: success rate, path length
against the BFS shortest path, mean return. The best checkpoint has the highest mean return.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.models.dqn import td_targets
from layerwise.train.tasks import Batch, BatchSource, StepContext, StepResult, StepTask


class ReplayBuffer:
    """A ring buffer of transitions (Lin 1992; Mnih et al. 2015): the newest ``capacity`` kept."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"ReplayBuffer.capacity: expected an integer >= 1, got {capacity!r}")
        self.capacity, self.obs_shape = capacity, tuple(obs_shape)
        self.obs = torch.zeros(capacity, *self.obs_shape)  # (N, *obs)
        self.next_obs = torch.zeros(capacity, *self.obs_shape)  # (N, *obs)
        self.actions = torch.zeros(capacity, dtype=torch.long)  # (N,)
        self.rewards = torch.zeros(capacity)  # (N,)
        self.terminal = torch.zeros(capacity, dtype=torch.bool)  # (N,)
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        i = self.pos
        self.obs[i] = torch.from_numpy(obs)
        self.next_obs[i] = torch.from_numpy(next_obs)
        self.actions[i], self.rewards[i], self.terminal[i] = int(action), float(reward), bool(terminal)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, terminal) of ``n`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise LayerwiseError("ReplayBuffer.sample: the buffer is empty")
        idx = torch.randint(self.size, (n,), generator=generator)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminal[idx]

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        n = self.size
        tensors = {"obs": self.obs[:n], "next_obs": self.next_obs[:n], "actions": self.actions[:n],
                   "rewards": self.rewards[:n], "terminal": self.terminal[:n]}
        return tensors, {"capacity": self.capacity, "size": n, "pos": self.pos}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ConfigError(f"--resume: the checkpoint's replay buffer holds {state['capacity']} transitions, "
                              f"this run's {self.capacity}; an exact resume needs the same --buffer-size")
        n = int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminal"):
            getattr(self, name)[:n] = tensors[name]
        self.size, self.pos = n, int(state["pos"])


class _Env(BatchSource):
    """The environment as the loop's batch source: the replay minibatch is drawn by the task,
    so a "batch" is empty and an "epoch" is one step."""

    def __init__(self, env, batch_size: int) -> None:
        self.env, self.batch_size = env, batch_size

    @property
    def batches_per_epoch(self) -> int:
        return 1

    def batch(self, index: int) -> Batch:
        return ()

    def eval_batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        return iter(())


@dataclass
class Rollout:
    start: tuple[int, int]
    success: bool
    steps: int
    shortest: int
    path: list[tuple[int, int]]
    ret: float


@torch.no_grad()
def greedy_rollouts(model: nn.Module, env, starts: list[tuple[int, int]], device: torch.device | str = "cpu",
                    max_steps: int | None = None) -> list[Rollout]:
    """The greedy policy (argmax Q) from each start in a copy of ``env``; an episode fails
    after ``max_steps`` (default: the number of free cells, more than any loop-free path)."""
    from layerwise.envs import GridMaze

    free = env.free_cells()
    limit = max_steps or len(free)
    probe = GridMaze(env.layout, max_steps=limit, observation=env.observation, goal_reward=env.goal_reward,
                     step_reward=env.step_reward, wall_reward=env.wall_reward)
    was = model.training
    model.eval()
    out = []
    try:
        for start in starts:
            obs = probe.reset(start=start)
            path, ret, done = [probe.position], 0.0, start == probe.goal
            while not done:
                q = model(torch.from_numpy(obs).unsqueeze(0).to(device))  # (1, A)
                obs, r, done = probe.step(int(q.argmax(dim=1)))
                ret += r
                path.append(probe.position)
            success = probe.position == probe.goal
            out.append(Rollout(start, success, len(path) - 1, probe.shortest_path_length(start), path, ret))
    finally:
        model.train(was)
    return out


def eval_starts(env, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` start cells drawn uniformly (with replacement, seeded) from the free non-goal cells."""
    cells = [p for p in env.free_cells() if p != env.goal]
    rng = np.random.default_rng(seed)
    return [cells[i] for i in rng.integers(0, len(cells), n)]


def policy_metrics(rollouts: list[Rollout], prefix: str = "") -> dict:
    """success_rate; path_ratio: the mean over successful starts of path length ÷ BFS shortest
    path; mean_return."""
    ok = [r for r in rollouts if r.success]
    ratios = [r.steps / r.shortest for r in ok if r.shortest > 0]
    return {f"{prefix}success_rate": len(ok) / len(rollouts) if rollouts else 0.0,
            f"{prefix}path_ratio": sum(ratios) / len(ratios) if ratios else float("nan"),
            f"{prefix}mean_return": sum(r.ret for r in rollouts) / len(rollouts) if rollouts else float("nan")}


class DQNTask(StepTask):
    """Deep Q-learning in a grid maze (see the module docstring).

    gamma: discount. eps_start, eps_end, eps_decay: ε-greedy exploration, ε decaying
    linearly over the first ``eps_decay`` (a fraction) of the steps. buffer_size,
    learning_starts: replay capacity and random transitions before the first update.
    target_update: steps between target-network copies. double: double DQN targets.
    eval_starts: greedy episodes per evaluation (plus one from every free cell).
    seed: seeds exploration, minibatch sampling and the evaluation starts.
    """

    unit = "transitions"
    counts_epochs = False

    def __init__(self, gamma: float = 0.95, eps_start: float = 1.0, eps_end: float = 0.05, eps_decay: float = 0.5,
                 buffer_size: int = 10_000, learning_starts: int = 500, target_update: int = 200, double: bool = True,
                 eval_starts: int = 100, seed: int = 0) -> None:
        name = "DQNTask"
        checks = (
            ("gamma", 0.0 <= gamma <= 1.0, "a number in [0, 1]"),
            ("eps_start", 0.0 <= eps_start <= 1.0, "a number in [0, 1]"),
            ("eps_end", 0.0 <= eps_end <= eps_start, "a number in [0, eps_start]"),
            ("eps_decay", 0.0 < eps_decay <= 1.0, "a fraction in (0, 1]"),
            ("buffer_size", isinstance(buffer_size, int) and buffer_size >= 1, "an integer >= 1"),
            ("learning_starts", isinstance(learning_starts, int) and 1 <= learning_starts <= buffer_size,
             "an integer in [1, buffer_size]"),
            ("target_update", isinstance(target_update, int) and target_update >= 1, "an integer >= 1"),
            ("eval_starts", isinstance(eval_starts, int) and eval_starts >= 1, "an integer >= 1"),
        )
        for field_name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}.{field_name}: expected {expected}, got {locals()[field_name]!r}")
        self.gamma, self.eps_start, self.eps_end, self.eps_decay = float(gamma), float(eps_start), float(eps_end), float(eps_decay)
        self.buffer_size, self.learning_starts, self.target_update = buffer_size, learning_starts, target_update
        self.double, self.n_eval_starts, self.seed = bool(double), eval_starts, seed
        self.env = None
        self.buffer: ReplayBuffer | None = None
        self.target: nn.Module | None = None
        self.rng = torch.Generator().manual_seed(seed)
        self.total_steps = 1
        self.batch_size = 32
        self.obs: np.ndarray | None = None
        self.episode = {"return": 0.0, "length": 0, "count": 0}

    # -- setup
    def bind(self, model: nn.Module) -> None:
        if not hasattr(model, "config") or not hasattr(model.config, "n_actions"):
            raise LayerwiseError(f"DQNTask: expected a layerwise Q-network, got {type(model).__name__}")
        self.target = copy.deepcopy(model)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.target.eval()
        self.n_actions = model.config.n_actions
        self.obs_shape = tuple(model.config.obs_shape)

    def configure(self, config, source: BatchSource) -> None:
        super().configure(config, source)
        self.total_steps = int(config.steps)

    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        from layerwise.envs import GridMaze

        if not isinstance(data, GridMaze):
            raise LayerwiseError(f"DQNTask: the training data is the environment, a GridMaze; got {type(data).__name__}")
        if getattr(self, "obs_shape", None) is not None and tuple(data.obs_shape) != self.obs_shape:
            raise ConfigError(f"DQNTask: the maze's observations are {tuple(data.obs_shape)}, the Q-network takes "
                              f"{self.obs_shape} (set obs_shape from the maze)")
        if data.n_actions != getattr(self, "n_actions", data.n_actions):
            raise ConfigError(f"DQNTask: the maze has {data.n_actions} actions, the Q-network {self.n_actions}")
        self.env, self.batch_size = data, batch_size
        self.buffer = ReplayBuffer(self.buffer_size, data.obs_shape)
        return _Env(data, batch_size)

    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        return (torch.zeros(self.batch_size, *self.obs_shape),), {}

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        return batch

    # -- what the loop builds and saves
    def optimizer_params(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"q": model}

    def checkpoint_models(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model, "target": self.target}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, buf = self.buffer.state_dict()
        tensors = {f"replay/{k}": v for k, v in tensors.items()}
        tensors["rng"] = self.rng.get_state()
        if self.obs is not None:
            tensors["obs"] = torch.from_numpy(self.obs.copy())
        return tensors, {"replay": buf, "env": self.env.get_state(), "episode": dict(self.episode)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        self.buffer.load_state_dict({k[len("replay/"):]: v for k, v in tensors.items() if k.startswith("replay/")},
                                    state["replay"])
        self.rng.set_state(tensors["rng"])
        self.env.set_state(state["env"])
        self.obs = tensors["obs"].numpy().copy() if "obs" in tensors else None
        self.episode = dict(state["episode"])

    def monitor(self) -> tuple[str, str]:
        return "mean_return", "max"

    def step_flops(self, model: nn.Module, batch: Batch) -> int | None:
        from layerwise.train.perf import train_flops

        f = train_flops(model, self.model_inputs(batch)[0])
        # the update (forward + backward on the minibatch), the target's (and with double DQN
        # the online network's) forward on s', and one forward to act: about f + 2f/3 (+ f/3)
        return int(f * (1 + (2 if self.double else 1) / 3) + f / 3 / self.batch_size) if f else None

    def describe(self) -> dict:
        return {"task": "dqn", "gamma": self.gamma, "eps_start": self.eps_start, "eps_end": self.eps_end,
                "eps_decay": self.eps_decay, "buffer_size": self.buffer_size, "learning_starts": self.learning_starts,
                "target_update": self.target_update, "double": self.double, "eval_starts": self.n_eval_starts}

    # -- acting and learning
    def epsilon(self, step: int) -> float:
        """ε of optimizer step ``step`` (0-based): linear from eps_start to eps_end, then flat."""
        span = max(1, math.ceil(self.eps_decay * self.total_steps))
        return self.eps_end + (self.eps_start - self.eps_end) * max(0.0, 1.0 - step / span)

    def _act(self, model: nn.Module, eps: float, device) -> int:
        if float(torch.rand((), generator=self.rng)) < eps:
            return int(torch.randint(self.n_actions, (), generator=self.rng))
        with torch.no_grad():
            return int(model(torch.from_numpy(self.obs).unsqueeze(0).to(device)).argmax(dim=1))

    def _transition(self, model: nn.Module, eps: float, device) -> dict:
        """One environment step into the buffer; the finished episode's numbers, if one ended."""
        env = self.env
        if self.obs is None or env.done:
            self.obs = env.reset()
        action = self._act(model, eps, device)
        next_obs, reward, done = env.step(action)
        self.buffer.add(self.obs, action, reward, next_obs, done and not env.truncated)
        self.episode["return"] += reward
        self.episode["length"] += 1
        self.obs = next_obs
        if not done:
            return {}
        ended = {"episode_return": self.episode["return"], "episode_length": float(self.episode["length"]),
                 "episode_success": 0.0 if env.truncated else 1.0}
        self.episode = {"return": 0.0, "length": 0, "count": self.episode["count"] + 1}
        self.obs = None
        return ended

    def train_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        if self.buffer.size == 0:  # the first step of a fresh run: random transitions first
            for _ in range(self.learning_starts):
                self._transition(model, 1.0, ctx.device)
        eps = self.epsilon(ctx.step)
        metrics = self._transition(model, eps, ctx.device)
        obs, actions, rewards, next_obs, terminal = (t.to(ctx.device) for t in self.buffer.sample(self.batch_size, self.rng))
        with ctx.autocast():
            q_all = model(obs).float()  # (B, A)
        q = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)  # (B,)
        with torch.no_grad(), ctx.autocast():
            next_q = self.target(next_obs).float()  # (B, A)
            next_online = model(next_obs).float() if self.double else None
        y = td_targets(rewards, next_q, terminal, self.gamma, next_online)  # (B,)
        loss = ctx.update("q", F.smooth_l1_loss(q, y))
        if (ctx.step + 1) % self.target_update == 0:
            self.target.load_state_dict(model.state_dict())
        metrics.update(epsilon=eps, q_mean=float(q.detach().mean()), episodes=float(self.episode["count"]))
        return StepResult(loss, metrics, 1)

    def evaluate(self, model: nn.Module, data: Any, ctx: StepContext) -> dict:
        env = data if data is not None else self.env
        sampled = greedy_rollouts(model, env, eval_starts(env, self.n_eval_starts, self.seed), ctx.device)
        every = greedy_rollouts(model, env, [p for p in env.free_cells() if p != env.goal], ctx.device)
        return {**policy_metrics(sampled), **policy_metrics(every, "all_cells_"), "starts": len(sampled)}
