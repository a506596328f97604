"""layerwise: build, pretrain and fine-tune models from scratch, and know exactly
how deep they are and where their trainable parameters, FLOPs and memory go."""

from layerwise.errors import LayerwiseError

__version__ = "0.1.0"
__all__ = ["LayerwiseError", "__version__"]
