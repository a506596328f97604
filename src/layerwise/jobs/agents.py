"""Whole jobs for the generative and reinforcement-learning families: train a DQN agent in a
built-in maze, train a GAN on a built-in image set. Both run the one training loop with
their own task (:class:`~layerwise.train.dqn.DQNTask`, :class:`~layerwise.train.gan.GANTask`)
and return what a report needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.rundir import RunDir
from layerwise.train.config import TrainConfig
from layerwise.train.trainer import Event, Trainer, TrainResult


@dataclass
class AgentResult:
    result: TrainResult
    model: nn.Module  # the best checkpoint's Q-network
    env: Any
    metrics: dict  # the best checkpoint's greedy policy: 100 starts and every free cell
    rollouts: list = field(default_factory=list)  # the greedy episodes from every free cell
    checkpoint: Path | None = None


def train_maze_agent(config: TrainConfig, maze: str = "10x10", model: str = "dqn-maze-mlp",
                     model_overrides: dict | None = None, task_options: dict | None = None, max_steps: int = 100,
                     resume: bool = False, callback: Callable[[Event], None] | None = None,
                     run: RunDir | None = None) -> AgentResult:
    """Deep Q-learning in the built-in ``maze`` (episodes start on a random free cell and end
    at G or after ``max_steps``); the Q-network's ``obs_shape`` comes from the maze. Returns
    the greedy policy's metrics of the best checkpoint (by mean return)."""
    from layerwise.envs import GridMaze, maze_layout
    from layerwise.models.registry import build, get_config
    from layerwise.train.checkpoint import load_checkpoint, resolve_checkpoint
    from layerwise.train.dqn import DQNTask, eval_starts, greedy_rollouts, policy_metrics
    from layerwise.train.trainer import seed_everything

    seed_everything(config.seed)
    layout = maze_layout(maze)
    env = GridMaze(layout, max_steps=max_steps, random_start=True, seed=config.seed)
    probe = GridMaze(layout, max_steps=max_steps)
    cfg = get_config(model, **{"obs_shape": env.obs_shape, "n_actions": env.n_actions, **(model_overrides or {})})
    net = build(cfg, device="cpu")
    task = DQNTask(seed=config.seed, **(task_options or {}))
    info = {"data": {"name": f"maze:{maze}", "kind": "environment", "layout": list(layout), "max_steps": max_steps,
                     "free_cells": len(env.free_cells()), "shortest_path": env.shortest_path_length()}}
    if run is not None:
        run.update(**info)
    trainer = Trainer(net, task, env, probe, config, callback, info, run=run)
    result = trainer.fit(resume=resume)
    best = None
    if config.out_dir is not None:
        best = resolve_checkpoint(config.out_dir, prefer="best")
        load_checkpoint(best, {"model": net})
    sampled = greedy_rollouts(net, probe, eval_starts(probe, task.n_eval_starts, task.seed))
    every = greedy_rollouts(net, probe, [p for p in probe.free_cells() if p != probe.goal])
    metrics = {**policy_metrics(sampled), **policy_metrics(every, "all_cells_")}
    return AgentResult(result, net, probe, metrics, every, best)


@dataclass
class GANResult:
    result: TrainResult
    model: nn.Module  # the best checkpoint's GAN
    task: Any
    metrics: dict  # score and classes of the final samples
    samples: torch.Tensor  # (N, C, H, W) in [0, 1]
    checkpoint: Path | None = None


def train_gan(config: TrainConfig, model: str, data: str, scorer=None, model_overrides: dict | None = None,
              task_options: dict | None = None, samples: int = 1000, grids: Path | None = None, resume: bool = False,
              callback: Callable[[Event], None] | None = None, run: RunDir | None = None) -> GANResult:
    """Train a GAN on the train split (80%, stratified, the seed's split) of a built-in image
    set; the validation split feeds the evaluations (once per epoch for an epoch run).
    ``scorer`` (images in [0, 1] -> metrics) picks the best checkpoint, whose ``samples``
    samples (a fixed noise batch) it scores at the end. ``grids``: a folder that gets a
    10×10 grid of samples (the same noise each time) at every evaluation, ``epoch-NNN.png``."""
    from layerwise.data import load_dataset, split
    from layerwise.errors import ConfigError
    from layerwise.models.registry import build, get_config
    from layerwise.train.checkpoint import load_checkpoint, resolve_checkpoint
    from layerwise.train.gan import GANTask
    from layerwise.train.trainer import seed_everything

    seed_everything(config.seed)
    ds = load_dataset(data)
    if not hasattr(ds, "images"):
        raise ConfigError(f"gan: --data {data} holds no images; expected an image set (mnist-5k, digits)")
    parts = split(ds, val=0.1, test=0.1, seed=config.seed)
    c, h, w = ds.image_shape
    cfg = get_config(model, **{"image_size": h, "channels": c, **(model_overrides or {})})
    net = build(cfg, device="cpu")
    task = GANTask(seed=config.seed, scorer=scorer, eval_samples=samples, **(task_options or {}))
    info = {"data": {"name": data, "kind": "image", "split_seed": config.seed, "train_images": len(parts.train)}}
    if run is not None:
        run.update(**info)
    steps_per_epoch = max(1, len(parts.train) // config.batch_size)

    def on_event(ev: Event) -> None:
        if callback is not None:
            callback(ev)
        if ev.kind == "eval" and grids is not None:
            from layerwise.report.example_plots import plot_image_grid

            epoch = -(-ev.step // steps_per_epoch)
            name = f"epoch-{epoch:03d}.png" if config.epochs is not None else f"step-{ev.step:06d}.png"
            score = next((v for k, v in ev.record.items() if k == getattr(scorer, "metric", None)), None)
            plot_image_grid(task.sample(net, 100), Path(grids) / name,
                            title=f"{name[:-4]}" + (f": {scorer.metric} {score:.2f}" if score is not None else ""))

    trainer = Trainer(net, task, parts.train, parts.val, config, on_event, info, run=run)
    result = trainer.fit(resume=resume)
    best = None
    if config.out_dir is not None:
        best = resolve_checkpoint(config.out_dir, prefer="best")
        load_checkpoint(best, task.checkpoint_models(net))
    images = task.sample(net, samples)
    metrics = scorer(images) if scorer is not None else {}
    return GANResult(result, net, task, metrics, images, best)
