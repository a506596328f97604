"""Small, dependency-free environments for reinforcement-learning examples and tests."""

from layerwise.envs.maze import ACTIONS, DEFAULT_LAYOUT, GridMaze

__all__ = ["ACTIONS", "DEFAULT_LAYOUT", "GridMaze"]
