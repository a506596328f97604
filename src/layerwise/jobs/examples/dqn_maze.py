"""The articles' deep-RL agent that finds its way through a maze: deep Q-learning (replay
buffer, target network, ε-greedy exploration) of the seed's Dense-Dense-linear Q-network in
the built-in 10×10 grid maze, every episode starting on a random free cell."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.agents import train_maze_agent
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import train_config
    from layerwise.report.example_plots import plot_maze, plot_rl_curve
    from layerwise.report.html import Section
    from layerwise.train.dqn import greedy_rollouts

    o = ctx.options
    hidden = tuple(int(x) for x in str(o["hidden"]).split(",") if x.strip())
    # A 2×64 MLP is tiny: one thread avoids the waits of a second one on a shared machine.
    cfg = train_config(ctx, {"steps": 8000, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "eval_every": 1000,
                             "log_every": 100, "checkpoint_every": 1000, "keep_last": 2, "num_threads": 1},
                       {"steps": 1500, "eval_every": 500, "checkpoint_every": 500, "log_every": 50})
    task = {"gamma": o["gamma"], "target_update": o["target_update"], "buffer_size": 10_000, "learning_starts": 500,
            "eps_start": 1.0, "eps_end": 0.05, "eps_decay": 0.5, "double": True, "eval_starts": 100}
    r = train_maze_agent(cfg, maze=o["maze"], model_overrides={"hidden": hidden}, task_options=task,
                         resume=ctx.resume, callback=ctx.callback, run=ctx.run)
    env, m = r.env, r.metrics
    ctx.emit(f"greedy policy of the best checkpoint: success {m['success_rate']:.2f} over 100 starts "
             f"({m['all_cells_success_rate']:.2f} over all {len(r.rollouts)} free cells), path ratio {m['path_ratio']:.3f}")
    policy = {}
    import torch

    with torch.no_grad():
        for cell in env.free_cells():
            if cell != env.goal:
                obs = env.reset(start=cell)
                policy[cell] = int(r.model(torch.from_numpy(obs).unsqueeze(0)).argmax(dim=1))
    far = max(r.rollouts, key=lambda x: x.shortest)
    shown = greedy_rollouts(r.model, env, [env.start, far.start])
    def label(name, x):
        return f"{name}: {x.steps} steps (BFS {x.shortest})" if x.success else f"{name}: no way to G (loops)"

    paths = {label("from S", shown[0]): shown[0].path, label(f"from {far.start}", shown[1]): shown[1].path}
    out = ctx.out_dir
    plot_maze(env.layout, policy, paths, out / "maze-policy.png",
              title=f"{o['maze']} maze: greedy action of every cell and two learned paths")
    plot_rl_curve(r.result.history, r.result.evals, out / "learning-curve.png",
                  title=f"Deep Q-learning in the {o['maze']} maze ({r.result.steps:,} steps)")
    metrics = {"success_rate": m["success_rate"], "path_ratio": m["path_ratio"], "mean_return": m["mean_return"],
               "all_cells_success_rate": m["all_cells_success_rate"], "all_cells_path_ratio": m["all_cells_path_ratio"],
               "steps": r.result.steps}
    md = (f"Maze {o['maze']}: {len(env.free_cells())} free cells, S→G {env.shortest_path_length()} steps. Q-network "
          f"{len(env.free_cells()) and env.obs_shape[0]} (one-hot cell) → {' → '.join(map(str, hidden))} → 4 action values, "
          f"trained {r.result.steps:,} steps ({r.result.seconds:.0f} s): one ε-greedy environment step and one "
          f"double-DQN update on 64 replayed transitions per step, target network copied every {o['target_update']} "
          f"steps. The best checkpoint's greedy policy (argmax Q) reaches G from **{m['success_rate']:.0%}** of 100 "
          f"random starts and {m['all_cells_success_rate']:.0%} of every free cell; its paths are "
          f"**{m['path_ratio']:.3f}×** the BFS shortest path on average.")
    return ExampleOutput(metrics, {"policy": m, "checkpoint": str(r.checkpoint) if r.checkpoint else None,
                                   "rollouts": [{"start": list(x.start), "success": x.success, "steps": x.steps,
                                                 "shortest": x.shortest} for x in r.rollouts]},
                         [Section("Deep Q-learning in a maze", markdown=md,
                                  images=[out / "learning-curve.png", out / "maze-policy.png", out / "loss-curve.png"])])


EXAMPLE = Example(
    name="dqn-maze", shows="a deep-RL agent that finds its way through a maze",
    data="built-in 10×10 grid maze (37 walls, 63 free cells)",
    model="dqn-maze-mlp (one-hot 100 → 64 → 64 → 4, double DQN, replay buffer, target network)", minutes=1.5,
    targets=(Target("success_rate", "==", 1.0), Target("path_ratio", "<=", 1.05)), run=run,
    options=(Option("--maze", str, "10x10", "built-in maze (5x5 | 10x10)"),
             Option("--hidden", str, "64,64", "hidden widths of the Q-network, comma-separated (the seed: 24,24)"),
             Option("--gamma", float, 0.95, "discount factor"),
             Option("--target-update", int, 200, "steps between target-network copies")),
)
