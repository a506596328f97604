"""DQN family and the grid maze: counts, shapes, dueling, Bellman targets, maze dynamics."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.envs import DEFAULT_LAYOUT, GridMaze
from layerwise.errors import ConfigError, InputShapeError, LayerwiseError
from layerwise.models import build, get_preset
from layerwise.models.dqn import DQNConfig, td_targets
from layerwise.roles import declared_kind, is_declared_block

UP, RIGHT, DOWN, LEFT = range(4)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def formula(c: DQNConfig) -> int:
    total = 0
    if c.arch == "cnn":
        channels, h, w = c.obs_shape
        maps = (channels, *c.conv_channels)
        total += sum(c.kernel_size**2 * i * o + o for i, o in zip(maps, maps[1:]))
        features = c.conv_channels[-1] * h * w
    else:
        features = int(np.prod(c.obs_shape))
    widths = (features, *c.hidden)
    total += sum(i * o + o for i, o in zip(widths, widths[1:]))
    outputs = c.n_actions + 1 if c.dueling else c.n_actions  # the value stream adds one output
    return total + widths[-1] * outputs + outputs


def test_seed_agent_count_matches_keras():
    """The seed article's DQNAgent._build_model, built by Keras for the 25-cell maze."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    L = keras.layers
    agent = keras.Sequential(
        [
            keras.Input((25,)),
            L.Dense(24, activation="relu"),
            L.Dense(24, activation="relu"),
            L.Dense(4, activation="linear"),
        ]
    )
    model = build("dqn-maze-mlp", device="meta")
    assert n_params(model) == agent.count_params() == get_preset("dqn-maze-mlp").reference_params == 1_324


@pytest.mark.parametrize(
    "config",
    [
        DQNConfig(),
        DQNConfig(hidden=(), n_actions=5),
        DQNConfig(obs_shape=(4, 6), hidden=(32, 16, 8), dueling=True),
        DQNConfig(arch="cnn", obs_shape=(3, 5, 5), conv_channels=(16, 32), hidden=(64,)),
        DQNConfig(arch="cnn", obs_shape=(2, 7, 4), conv_channels=(8,), kernel_size=5, hidden=(), dueling=True),
    ],
)
def test_counts_are_formula_sums(config):
    assert n_params(build(config, device="meta")) == formula(config)


def test_preset_counts_by_hand():
    # conv 3·16·9+16 = 448, conv 16·32·9+32 = 4,640, Linear 32·5·5·64+64 = 51,264, head 64·4+4 = 260
    assert n_params(build("dqn-maze-cnn", device="meta")) == 448 + 4_640 + 51_264 + 260
    assert n_params(build("dqn-tiny", device="meta")) == 9 * 16 + 16 + 16 * 4 + 4


def test_presets_fit_the_default_maze():
    mlp, cnn = build("dqn-maze-mlp"), build("dqn-maze-cnn")
    for model, observation in ((mlp, "onehot"), (cnn, "grid")):
        env = GridMaze(observation=observation)
        assert model.config.obs_shape == env.obs_shape and model.config.n_actions == env.n_actions
        obs = torch.as_tensor(np.stack([env.reset(), env.step(DOWN)[0]]))
        assert model(obs).shape == (2, 4)
    assert build("dqn-tiny").config.obs_shape == GridMaze(["S..", ".#.", "..G"]).obs_shape


@pytest.mark.parametrize("name", ["dqn-maze-mlp", "dqn-maze-cnn", "dqn-tiny"])
@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("dueling", [False, True])
def test_forward_shapes(name, device, dueling):
    model = build(name, device=device, dueling=dueling)
    (obs,) = model.example_inputs(batch_size=6)
    assert obs.shape == (6, *model.config.obs_shape) and obs.device.type == device
    q = model(obs)
    assert q.shape == (6, 4) and q.device.type == device


def test_dueling_combines_value_and_advantage():
    torch.manual_seed(0)
    model = build("dqn-maze-cnn", dueling=True)
    (obs,) = model.example_inputs(batch_size=5)
    q = model(obs)
    features = obs
    for layer in [*model.convs]:
        features = layer(features)
    features = features.flatten(1)
    for layer in model.hidden:
        features = layer(features)
    value, advantage = model.value(features), model.advantage(features)
    torch.testing.assert_close(q, value + advantage - advantage.mean(-1, keepdim=True))
    torch.testing.assert_close(q.mean(-1, keepdim=True), value)  # identifiability: mean advantage is 0
    assert declared_kind(model.value) == declared_kind(model.advantage) == "head"


def test_roles_and_blocks():
    model = build("dqn-maze-cnn", device="meta")
    kinds = {n: declared_kind(m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert kinds == {"convs.0.conv": "conv", "convs.1.conv": "conv", "hidden.0.linear": "mlp", "head": "head"}
    assert [n for n, m in model.named_modules() if is_declared_block(m)] == ["convs.0", "convs.1", "hidden.0"]


def test_td_targets_hand_worked():
    rewards = torch.tensor([1.0, -0.1, 0.5, 0.0])
    next_q = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, -1.0, 0.0, 0.2], [4.0, 4.0, 4.0, 4.0], [-2.0, -1.0, -3.0, -4.0]])
    dones = torch.tensor([False, False, True, False])
    # y = r + 0.9·max Q': 1 + 0.9·3 = 3.7; −0.1 + 0.9·0.5 = 0.35; terminal: 0.5; 0 + 0.9·(−1) = −0.9
    torch.testing.assert_close(td_targets(rewards, next_q, dones, gamma=0.9), torch.tensor([3.7, 0.35, 0.5, -0.9]))
    # Double DQN: the online net picks a' (0, 2, 1, 3), the target net values it: 1, 0, −, −4
    online = torch.tensor([[9.0, 0, 0, 0], [0, 0, 9.0, 0], [0, 9.0, 0, 0], [0, 0, 0, 9.0]])
    torch.testing.assert_close(
        td_targets(rewards, next_q, dones.float(), gamma=0.9, next_q_online=online),
        torch.tensor([1.9, -0.1, 0.5, -3.6]),
    )
    with pytest.raises(ValueError, match="gamma"):
        td_targets(rewards, next_q, dones, gamma=1.5)
    with pytest.raises(InputShapeError):
        td_targets(rewards[:3], next_q, dones, gamma=0.9)


def test_td_targets_do_not_carry_gradients():
    next_q = torch.randn(3, 4, requires_grad=True)
    y = td_targets(torch.zeros(3), next_q, torch.zeros(3), gamma=0.99)
    assert not y.requires_grad


# ---- the maze ---------------------------------------------------------------


def test_walls_and_edges_block_moves():
    env = GridMaze(step_reward=-0.01, wall_reward=-0.05)
    env.reset()
    assert env.position == (0, 0)
    for action in (UP, LEFT):  # off the grid
        obs, reward, done = env.step(action)
        assert env.position == (0, 0) and reward == -0.05 and not done
    obs, reward, done = env.step(RIGHT)
    assert env.position == (0, 1) and reward == -0.01
    obs, reward, done = env.step(RIGHT)  # (0, 2) is a wall
    assert env.position == (0, 1) and reward == -0.05
    assert obs.shape == (25,) and obs.dtype == np.float32 and obs.sum() == 1 and obs[1] == 1


def test_shortest_path_reaches_goal_and_ends_episode():
    env = GridMaze(goal_reward=1.0, step_reward=-0.01)
    assert env.shortest_path_length() == 8
    env.reset()
    path = [DOWN, DOWN, RIGHT, RIGHT, RIGHT, DOWN, RIGHT, DOWN]  # (0,0) → (2,0) → (2,3) → (3,3) → (3,4) → (4,4)
    rewards, done = [], False
    for action in path:
        assert not done
        _, reward, done = env.step(action)
        rewards.append(reward)
    assert done and not env.truncated and env.position == env.goal == (4, 4)
    assert rewards == [-0.01] * 7 + [1.0]
    with pytest.raises(LayerwiseError, match="reset"):
        env.step(UP)


def test_time_limit_truncates():
    env = GridMaze(max_steps=3)
    env.reset()
    dones = [env.step(UP)[2] for _ in range(3)]
    assert dones == [False, False, True] and env.truncated and env.position == env.start
    env.reset()
    assert env.steps == 0 and not env.done and not env.truncated


def test_grid_observation_planes():
    env = GridMaze(observation="grid")
    obs = env.reset()
    assert obs.shape == (3, 5, 5) == env.obs_shape
    expected_walls = np.array([[ch == "#" for ch in row] for row in DEFAULT_LAYOUT], dtype=np.float32)
    np.testing.assert_array_equal(obs[0], expected_walls)
    assert obs[1, 0, 0] == 1 and obs[1].sum() == 1
    assert obs[2, 4, 4] == 1 and obs[2].sum() == 1


def test_seeded_random_starts_repeat():
    a = GridMaze(random_start=True, seed=7)
    b = GridMaze(random_start=True, seed=7)
    starts_a = [(a.reset(), a.position)[1] for _ in range(10)]
    starts_b = [(b.reset(), b.position)[1] for _ in range(10)]
    assert starts_a == starts_b
    assert len(set(starts_a)) > 1
    assert all(not a.walls[p] and p != a.goal for p in starts_a)
    a.reset(seed=3)
    b.reset(seed=3)
    assert a.position == b.position


@pytest.mark.parametrize(
    "layout, match",
    [
        (["S.#", "..G", "..."], None),
        (["S.", "..."], "equal length"),
        (["S.#", "###", "..G"], "reachable"),
        (["S.S", "..G"], "one start"),
        (["S..", "..."], "one goal"),
        (["S.x", "..G"], "characters"),
    ],
)
def test_layout_validation(layout, match):
    if match is None:
        assert GridMaze(layout).shortest_path_length() == 3
        return
    with pytest.raises(ConfigError, match=f"GridMaze.layout: expected .*{match}"):
        GridMaze(layout)


def test_bad_action_is_named():
    env = GridMaze()
    env.reset()
    with pytest.raises(LayerwiseError, match="action 4 is not one of 0 \\(up\\)"):
        env.step(4)


def test_q_learning_on_all_transitions_finds_the_shortest_path():
    """Fitted Q-iteration with td_targets over every (state, action) of the maze: the greedy
    policy of the trained dqn-maze-mlp walks the 8-step shortest path. Ties env, targets and net."""
    torch.manual_seed(0)
    env = GridMaze()
    states, actions, rewards, next_states, dones = [], [], [], [], []
    for cell in env.free_cells():
        if cell == env.goal:
            continue
        for action in range(env.n_actions):
            env.reset()
            env.position = cell
            states.append(env.observe())
            obs, reward, done = env.step(action)
            actions.append(action)
            rewards.append(reward)
            next_states.append(obs)
            dones.append(done)
    s, s2 = torch.as_tensor(np.stack(states)), torch.as_tensor(np.stack(next_states))
    a, r, d = torch.tensor(actions), torch.tensor(rewards), torch.tensor(dones)
    model = build("dqn-maze-mlp")
    target = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(400):  # seeds 0–5 all find the path by step 260
        if step % 20 == 0:
            target.load_state_dict(model.state_dict())
        y = td_targets(r, target(s2), d, gamma=0.9)
        loss = F.smooth_l1_loss(model(s).gather(1, a[:, None]).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    obs, done, steps = env.reset(), False, 0
    while not done:
        with torch.no_grad():
            action = int(model(torch.as_tensor(obs)[None]).argmax())
        obs, _, done = env.step(action)
        steps += 1
    assert not env.truncated and steps == env.shortest_path_length() == 8
