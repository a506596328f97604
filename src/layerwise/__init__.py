"""layerwise: build, pretrain and fine-tune models from scratch, and know exactly
how deep they are and where their trainable parameters, FLOPs and memory go."""

from layerwise.errors import LayerwiseError

__version__ = "0.1.0"
__all__ = ["LayerwiseError", "__version__", "load_run"]


def __getattr__(name: str):
    # The public entry points, imported on first use (so `import layerwise` stays light).
    if name == "load_run":
        from layerwise.jobs.runs import load_run

        return load_run
    raise AttributeError(f"module 'layerwise' has no attribute {name!r}")
