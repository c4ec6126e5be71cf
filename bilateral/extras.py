"""The optional parts of the suite (pyproject extras): a missing one is an error that names the
extra to install, not an ImportError from deep inside a run."""

from __future__ import annotations

import importlib
from types import ModuleType

from bilateral.errors import ConfigError

EXTRA_OF = {
    "ray": "ray",
    "submitit": "slurm",
    "ffcv": "ffcv",
    "pytorch_grad_cam": "analysis",
    "matplotlib": "analysis",
    "lightly": "unsupervised",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (one of EXTRA_OF), or say which extra `purpose` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRA_OF[module]
        raise ConfigError(
            f"{purpose} needs {module}, which cannot be imported ({exc}). Fix: pip install -e '.[{extra}]' "
            "in the repository (bash setup.sh installs every extra)"
        ) from None
