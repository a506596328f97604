"""Q-networks for grid-world agents (deep Q-learning, Mnih et al. 2015).

``forward(obs)`` maps a batch of observations (B, *obs_shape) to action values
(B, n_actions). Architectures (``arch``):
- "mlp": flatten → Linear stack → Linear to n_actions; the seed article's maze agent
  is Dense(24, relu) → Dense(24, relu) → Dense(n_actions, linear) (``dqn-maze-mlp``).
- "cnn": for (C, H, W) grid observations: Conv2d stack (stride 1, "same" padding, so the
  map keeps the grid's size) → flatten → Linear stack → Linear to n_actions.

``dueling`` (Wang et al. 2016, eq. 9) replaces the output Linear by a value stream
V(s) (Linear to 1) and an advantage stream A(s, a) (Linear to n_actions), combined as
Q = V + A − mean_a A. Both streams are kind "head" and run in parallel.

Roles: hidden Linears "mlp", convolutions "conv", output Linears "head"; each hidden
layer (weight layer + activation) is one block. :func:`td_targets` computes the
Bellman targets a training loop regresses Q(s, a) on; the environment lives in
``layerwise.envs.maze``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from layerwise.errors import InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.mlp import ACTIVATIONS, make_activation
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

ARCHS = ("mlp", "cnn")


def _positive_ints(values, allow_empty: bool) -> bool:
    return (allow_empty or len(values) > 0) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    )


@dataclass
class DQNConfig(ModelConfig):
    """A Q-network.

    arch: "mlp" or "cnn".
    obs_shape: one observation's shape: (H·W,) for a one-hot position, (C, H, W) for
        grid planes ("cnn" needs three dimensions; "mlp" flattens any shape).
    n_actions: number of discrete actions (4 in a maze: up, right, down, left).
    hidden: widths of the hidden Linears (may be empty).
    activation: one of relu, relu6, leaky_relu, gelu, silu, tanh, sigmoid.
    conv_channels: "cnn" only: output channels of each Conv2d.
    kernel_size: "cnn" only: odd square kernel, padded to keep the grid size.
    dueling: split the output into value and advantage streams.
    """

    family: ClassVar[str] = "dqn"

    arch: str = "mlp"
    obs_shape: tuple[int, ...] = (25,)
    n_actions: int = 4
    hidden: tuple[int, ...] = (24, 24)
    activation: str = "relu"
    conv_channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    dueling: bool = False

    def __post_init__(self) -> None:
        self.obs_shape = tuple(self.obs_shape)
        self.hidden = tuple(self.hidden)
        self.conv_channels = tuple(self.conv_channels)
        self.check(self.arch in ARCHS, "arch", f"one of {', '.join(ARCHS)}")
        self.check(_positive_ints(self.obs_shape, allow_empty=False), "obs_shape", "one or more positive integers")
        if self.arch == "cnn":
            self.check(len(self.obs_shape) == 3, "obs_shape", "(channels, height, width) for arch cnn")
            self.check(
                _positive_ints(self.conv_channels, allow_empty=False), "conv_channels", "one or more positive integers"
            )
        self.check(
            isinstance(self.n_actions, int) and not isinstance(self.n_actions, bool) and self.n_actions > 0,
            "n_actions",
            "a positive integer",
        )
        self.check(_positive_ints(self.hidden, allow_empty=True), "hidden", "positive integers (or empty)")
        self.check(self.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}")
        self.check(
            isinstance(self.kernel_size, int) and self.kernel_size > 0 and self.kernel_size % 2 == 1,
            "kernel_size",
            "a positive odd integer",
        )
        self.check(isinstance(self.dueling, bool), "dueling", "true or false")


class QNetwork(nn.Module):
    def __init__(self, config: DQNConfig):
        super().__init__()
        self.config = config
        self.convs = nn.ModuleList()
        if config.arch == "cnn":
            channels, height, width = config.obs_shape
            for c_in, c_out in zip((channels, *config.conv_channels), config.conv_channels):
                conv = nn.Conv2d(c_in, c_out, config.kernel_size, padding=config.kernel_size // 2)
                self.convs.append(
                    mark_block(
                        nn.Sequential(OrderedDict(conv=set_kind(conv, "conv"), act=make_activation(config.activation)))
                    )
                )
            features = config.conv_channels[-1] * height * width
        else:
            features = math.prod(config.obs_shape)
        self.hidden = nn.ModuleList()
        for d_in, d_out in zip((features, *config.hidden), config.hidden):
            self.hidden.append(
                mark_block(
                    nn.Sequential(
                        OrderedDict(
                            linear=set_kind(nn.Linear(d_in, d_out), "mlp"), act=make_activation(config.activation)
                        )
                    )
                )
            )
        last = config.hidden[-1] if config.hidden else features
        if config.dueling:
            self.value = set_kind(nn.Linear(last, 1), "head")
            self.advantage = set_kind(nn.Linear(last, config.n_actions), "head")
        else:
            self.head = set_kind(nn.Linear(last, config.n_actions), "head")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values: obs (B, *obs_shape) → (B, n_actions)."""
        shape = self.config.obs_shape
        if obs.dim() != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise InputShapeError(
                f"dqn: obs has shape {tuple(obs.shape)}, expected (batch, {', '.join(map(str, shape))})"
            )
        x = obs.to(dtype=self._dtype())  # (B, *obs_shape)
        for conv in self.convs:
            x = conv(x)  # (B, C_i, H, W)
        x = x.flatten(1)  # (B, F)
        for layer in self.hidden:
            x = layer(x)  # (B, hidden_i)
        if self.config.dueling:
            advantage = self.advantage(x)  # (B, A)
            return self.value(x) + advantage - advantage.mean(dim=-1, keepdim=True)  # (B, A)
        return self.head(x)  # (B, A)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """(obs,): uniform random (batch_size, *obs_shape) on the parameters' device; seq_len is ignored."""
        p = next(self.parameters())
        return (torch.rand(batch_size, *self.config.obs_shape, device=p.device, dtype=p.dtype),)


def td_targets(
    rewards: torch.Tensor,
    next_q: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-step Bellman targets y = r + γ·(1 − done)·Q_target(s', a*).

    rewards (B,), dones (B,) (bool or 0/1), next_q (B, A): the target network's values
    of the next states. a* = argmax_a next_q (DQN, Mnih et al. 2015), or, when
    next_q_online (B, A) is given, argmax_a next_q_online (double DQN, van Hasselt et
    al. 2016). Returns (B,), detached from the graph.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if next_q.dim() != 2 or rewards.shape != next_q.shape[:1] or dones.shape != rewards.shape:
        raise InputShapeError(
            f"td_targets: rewards {tuple(rewards.shape)}, dones {tuple(dones.shape)} and next_q "
            f"{tuple(next_q.shape)} should be (B,), (B,) and (B, n_actions)"
        )
    with torch.no_grad():
        if next_q_online is None:
            best = next_q.max(dim=-1).values  # (B,)
        else:
            action = next_q_online.argmax(dim=-1, keepdim=True)  # (B, 1)
            best = next_q.gather(1, action).squeeze(1)  # (B,)
        return rewards + gamma * (1.0 - dones.to(best.dtype)) * best  # (B,)


def build_dqn(config: DQNConfig) -> QNetwork:
    return QNetwork(config)


register_family("dqn", DQNConfig, build_dqn)

register_preset(
    "dqn-maze-mlp",
    "dqn",
    description=(
        "The seed article's maze agent on layerwise's default 5×5 maze: one-hot position (25) → "
        "Dense(24, relu) → Dense(24, relu) → 4 action values"
    ),
    reference_params=1_324,
    reference_source=(
        "Keras count_params() of the seed program's Sequential with state_size=25, action_size=4: "
        "624 + 600 + 100; checked in tests/models/test_dqn.py"
    ),
    arch="mlp",
    obs_shape=(25,),
    n_actions=4,
    hidden=(24, 24),
)
register_preset(
    "dqn-maze-cnn",
    "dqn",
    description=(
        "Convolutional Q-network on the default 5×5 maze's wall/agent/goal planes (3×5×5): "
        "Conv 16 → Conv 32 (3×3, same) → Linear 64 → 4 action values"
    ),
    arch="cnn",
    obs_shape=(3, 5, 5),
    n_actions=4,
    hidden=(64,),
    conv_channels=(16, 32),
    kernel_size=3,
)
register_preset(
    "dqn-tiny",
    "dqn",
    description="Tiny Q-network for tests: a 3×3 grid one-hot (9) → Linear 16 → 4 action values",
    arch="mlp",
    obs_shape=(9,),
    n_actions=4,
    hidden=(16,),
)
