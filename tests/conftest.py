import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on two cores: one thread each. OpenMP threads spin while they
    # wait, so two processes with two threads each run small ops many times slower.
    import torch

    torch.set_num_threads(1)
