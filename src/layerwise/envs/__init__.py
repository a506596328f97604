"""Small, dependency-free environments for reinforcement-learning examples and tests."""

from layerwise.envs.maze import ACTIONS, DEFAULT_LAYOUT, MAZE_10X10, MAZES, GridMaze, maze_layout

__all__ = ["ACTIONS", "DEFAULT_LAYOUT", "MAZES", "MAZE_10X10", "GridMaze", "maze_layout"]
