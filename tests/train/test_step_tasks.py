"""Tasks that own their update in the one training loop: a GAN (two models, two optimizers)
and a DQN (replay buffer, environment, target network, exploration RNG). An interrupted run
resumes exactly; a collapsing GAN stops with one line and keeps its last good checkpoint."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from layerwise.data import load_dataset, split
from layerwise.envs import GridMaze
from layerwise.errors import ConfigError
from layerwise.models import build
from layerwise.train import CheckpointManager, TrainConfig, Trainer, load_checkpoint, load_model, read_records
from layerwise.train.dqn import DQNTask, ReplayBuffer, greedy_rollouts, policy_metrics
from layerwise.train.gan import GANTask
from layerwise.train.trainer import CollapseError


class Kill(Exception):
    pass


def _kill_at(step):
    def cb(ev):
        if ev.kind == "step" and ev.step == step:
            raise Kill

    return cb


def _records(run_dir, split_name="train"):
    drop = ("elapsed_s", "images_per_s", "transitions_per_s", "mfu")
    return [{k: v for k, v in r.items() if k not in drop} for r in read_records(run_dir / "metrics.jsonl")
            if r["split"] == split_name]


@pytest.fixture(scope="module")
def digits():
    parts = split(load_dataset("digits"), val=0.1, test=0.1, seed=0)
    return parts.train, parts.val


def _gan():
    torch.manual_seed(0)
    # BatchNorm in both networks: its running statistics must resume exactly too
    return build("dcgan-digits", latent_dim=8, g_hidden=(16, 8), d_hidden=(8, 16))


GAN_CFG = dict(steps=16, batch_size=32, lr=1e-3, optimizer="adam", betas=(0.5, 0.999), schedule="cosine",
               warmup_steps=2, checkpoint_every=5, eval_every=8, log_every=1, keep_last=3, clip_grad_norm=5.0)


@pytest.mark.slow
def test_an_interrupted_gan_resumes_exactly_with_both_optimizers(tmp_path, digits):
    train, val = digits
    task = lambda: GANTask(seed=3, label_smoothing=0.1, eval_samples=64)  # noqa: E731
    full = Trainer(_gan(), task(), train, val, TrainConfig(**GAN_CFG, out_dir=str(tmp_path / "a"))).fit()
    cfg = TrainConfig(**GAN_CFG, out_dir=str(tmp_path / "b"))
    with pytest.raises(Kill):
        Trainer(_gan(), task(), train, val, cfg, callback=_kill_at(12)).fit()
    assert CheckpointManager(tmp_path / "b" / "checkpoints").steps()[-1] == 10
    torch.manual_seed(99)  # another global RNG state: the checkpoint restores it
    resumed = Trainer(_gan(), task(), train, val, cfg).fit(resume=True)
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 17))
    assert a == b  # d_loss, g_loss, D's outputs and the logged grad norms of every step, exactly
    assert {"d_loss", "g_loss", "d_real", "d_fake", "grad_norm_generator", "grad_norm_discriminator"} <= set(a[0])
    assert _records(tmp_path / "a", "val") == _records(tmp_path / "b", "val")
    assert resumed.start_step == 10 and resumed.losses == full.losses
    # the two checkpoints at step 16: both networks (BatchNorm buffers included) and both optimizers equal
    ca = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000016")
    cb = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000016")
    assert sorted(ca.state["models"]) == ["discriminator", "generator"]
    for name in ("generator", "discriminator"):
        sa, sb = ca.optimizer_state_dict(name), cb.optimizer_state_dict(name)
        assert sa["state"].keys() == sb["state"].keys() and len(sa["state"]) > 0
        for i in sa["state"]:
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(sa["state"][i][k], sb["state"][i][k])
    ga, gb = _gan(), _gan()
    load_checkpoint(ca.path, {"generator": ga.generator, "discriminator": ga.discriminator})
    load_checkpoint(cb.path, {"generator": gb.generator, "discriminator": gb.discriminator})
    for (n, x), (_, y) in zip(ga.state_dict().items(), gb.state_dict().items()):
        assert torch.equal(x, y), n
    # load_model rebuilds the whole GAN from the two named parts
    rebuilt, _ = load_model(ca.path)
    assert all(torch.equal(x, y) for x, y in zip(rebuilt.state_dict().values(), ga.state_dict().values()))


@pytest.mark.slow
def test_a_gan_whose_discriminator_wins_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    train, val = digits
    # the generator never learns (its learning rate is 0): the discriminator's loss goes to 0
    task = GANTask(seed=0, collapse_loss=0.05, collapse_patience=10, g_lr_scale=0.0, eval_samples=32)
    cfg = TrainConfig(steps=400, batch_size=32, lr=3e-3, optimizer="adam", checkpoint_every=4, log_every=1,
                      keep_last=2, out_dir=str(tmp_path))
    with pytest.raises(CollapseError) as e:
        Trainer(_gan(), task, train, None, cfg).fit()
    msg = str(e.value)
    assert "\n" not in msg and "the GAN collapsed" in msg and "below 0.05 for 10 steps" in msg
    stop = int(msg.split("stopped at step ")[1].split(":")[0])
    recs = read_records(tmp_path / "metrics.jsonl")
    d = {r["step"]: r["d_loss"] for r in recs if r["split"] == "train"}
    assert recs[-1]["error"] == "collapsed" and recs[-1]["step"] == stop
    assert all(d[s] < 0.05 for s in range(stop - 9, stop + 1)) and d[stop - 10] >= 0.05
    steps = CheckpointManager(tmp_path / "checkpoints").steps()
    assert steps and steps[-1] <= stop - 10  # nothing was checkpointed while D was winning
    assert f"last good checkpoint: {tmp_path / 'checkpoints' / f'step-{steps[-1]:08d}'}" in msg


class _NaNGenerator(nn.Module):
    """The generator's samples turn NaN from the n-th call on."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, z):
        self.calls += self.training and torch.is_grad_enabled()  # training steps only, not the FLOP count
        out = self.inner(z)
        return out * float("nan") if self.calls >= self.n else out


def test_nan_samples_stop_the_gan_before_an_update(tmp_path, digits):
    train, _ = digits
    gan = _gan()
    gan.generator = _NaNGenerator(gan.generator, 7)
    cfg = TrainConfig(steps=20, batch_size=32, checkpoint_every=5, log_every=1, out_dir=str(tmp_path))
    with pytest.raises(CollapseError) as e:
        Trainer(gan, GANTask(), train, None, cfg).fit()
    msg = str(e.value)
    assert msg.startswith("stopped at step 7: the generator's samples are NaN") and "step-00000005" in msg
    ck = load_checkpoint(CheckpointManager(tmp_path / "checkpoints").latest())
    assert ck.step == 5


def test_gan_task_refuses_what_it_cannot_do(digits):
    train, _ = digits
    with pytest.raises(ConfigError, match="grad_accum"):
        Trainer(_gan(), GANTask(), train, None, TrainConfig(steps=2, batch_size=8, grad_accum=2)).fit()
    with pytest.raises(ConfigError, match="label_smoothing"):
        GANTask(label_smoothing=0.7)


# ---------------------------------------------------------------- DQN


def _maze():
    return GridMaze(random_start=True, max_steps=30, seed=5)


def _qnet():
    torch.manual_seed(0)
    return build("dqn-maze-mlp", hidden=(16,))


DQN_CFG = dict(steps=40, batch_size=16, lr=1e-3, optimizer="adam", checkpoint_every=10, eval_every=20, log_every=1,
               keep_last=3)


def _dqn():
    return DQNTask(seed=1, buffer_size=50, learning_starts=20, target_update=7, eval_starts=10)


@pytest.mark.slow
def test_an_interrupted_dqn_resumes_exactly_replay_buffer_and_all(tmp_path):
    full = Trainer(_qnet(), _dqn(), _maze(), GridMaze(), TrainConfig(**DQN_CFG, out_dir=str(tmp_path / "a"))).fit()
    cfg = TrainConfig(**DQN_CFG, out_dir=str(tmp_path / "b"))
    with pytest.raises(Kill):
        Trainer(_qnet(), _dqn(), _maze(), GridMaze(), cfg, callback=_kill_at(23)).fit()
    torch.manual_seed(7)
    np.random.seed(7)
    resumed = Trainer(_qnet(), _dqn(), _maze(), GridMaze(), cfg).fit(resume=True)
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 41)) and a == b
    assert any("episode_return" in r for r in a)  # episodes ended, and were logged at the same steps
    assert _records(tmp_path / "a", "val") == _records(tmp_path / "b", "val")
    assert resumed.start_step == 20 and resumed.losses == full.losses
    ca = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000040")
    cb = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000040")
    assert sorted(ca.state["models"]) == ["model", "target"]
    # the replay buffer wrapped around (capacity 50 < 20 + 40 transitions) and is identical
    assert ca.state["task_state"]["replay"] == cb.state["task_state"]["replay"] == {"capacity": 50, "size": 50, "pos": 10}
    assert ca.state["task_state"]["env"] == cb.state["task_state"]["env"]
    for k, v in ca.tensors.items():
        if k.startswith(("task/", "optimizer/")):
            assert torch.equal(v, cb.tensors[k]), k
    qa, qb, ta, tb = _qnet(), _qnet(), _qnet(), _qnet()
    load_checkpoint(ca.path, {"model": qa, "target": ta})
    load_checkpoint(cb.path, {"model": qb, "target": tb})
    for x, y in zip([*qa.parameters(), *ta.parameters()], [*qb.parameters(), *tb.parameters()]):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(qa.parameters(), ta.parameters()))  # 40 % 7 != 0


def test_dqn_refuses_epochs_and_a_network_that_does_not_fit_the_maze():
    with pytest.raises(ConfigError, match="--epochs"):
        Trainer(_qnet(), _dqn(), _maze(), None, TrainConfig(epochs=1)).fit()
    with pytest.raises(ConfigError, match="obs_shape"):
        Trainer(build("dqn-tiny"), _dqn(), _maze(), None, TrainConfig(steps=2)).fit()


def test_replay_buffer_keeps_the_newest_transitions():
    buf = ReplayBuffer(3, (2,))
    for i in range(5):
        buf.add(np.full(2, i, np.float32), i % 4, float(i), np.full(2, i + 1, np.float32), i == 4)
    assert len(buf) == 3 and buf.pos == 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0] and bool(buf.terminal[1])
    obs, act, rew, nxt, term = buf.sample(64, torch.Generator().manual_seed(0))
    assert set(rew.tolist()) == {2.0, 3.0, 4.0} and torch.equal(nxt[:, 0], obs[:, 0] + 1)


def test_policy_metrics_against_bfs():
    env = GridMaze()

    class Oracle(nn.Module):
        """Q = minus the BFS distance after each move: the greedy policy is a shortest path."""

        def forward(self, obs):
            out = []
            for o in obs:
                cell = divmod(int(o.argmax()), env.width)
                q = []
                for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
                    n = (cell[0] + dr, cell[1] + dc)
                    ok = 0 <= n[0] < env.height and 0 <= n[1] < env.width and not env.walls[n]
                    q.append(-env.shortest_path_length(n) if ok else -99.0)
                out.append(q)
            return torch.tensor(out, dtype=torch.float32)

    starts = [p for p in env.free_cells() if p != env.goal]
    m = policy_metrics(greedy_rollouts(Oracle(), env, starts))
    assert m["success_rate"] == 1.0 and m["path_ratio"] == 1.0

    class Stuck(nn.Module):
        def forward(self, obs):
            return torch.tensor([[1.0, 0, 0, 0]]).expand(obs.shape[0], 4)  # always up

    m = policy_metrics(greedy_rollouts(Stuck(), env, starts))
    assert m["success_rate"] == 0.0 and math.isnan(m["path_ratio"])
