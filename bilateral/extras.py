"""The optional parts of the suite (pyproject extras): a missing one, or one older than pyproject
allows, is an error that names the extra to install, not an ImportError from deep inside a run."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from packaging.requirements import Requirement

from bilateral.errors import ConfigError

EXTRA_OF = {
    "ray": "ray",
    "submitit": "slurm",
    "ffcv": "ffcv",
    "pytorch_grad_cam": "analysis",
    "matplotlib": "analysis",
    "lightly": "unsupervised",
    "imagecorruptions": "evaluation",
    "mlflow": "tracking",
    "wandb": "tracking",
    "optuna": "tune",
}
# Installed outside the extras: torchattacks 3.5.1 pins requests~=2.25.1, which Ray's dependencies
# refuse, while the attacks themselves need only torch, torchvision, scipy, tqdm, numpy and Pillow.
NO_DEPS = {"torchattacks": "torchattacks==3.5.1"}


def too_old(module: str) -> str:
    """Why the installed distribution named `module` is older than bilateral's pyproject allows ('' if
    it is not): a lab's cluster may run an older Ray, whose client must then be the same version."""
    try:
        requirements = [Requirement(text) for text in metadata.requires("bilateral") or []]
        have = metadata.version(module)
    except metadata.PackageNotFoundError:
        return ""
    for req in requirements:
        if req.name == module and req.specifier and not req.specifier.contains(have, prereleases=True):
            return f"{module} {have} is installed, but bilateral needs {module}{req.specifier}"
    return ""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (one of EXTRA_OF), or say which extra `purpose` needs."""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        if module in NO_DEPS:
            raise ConfigError(
                f"{purpose} needs {module}, which cannot be imported ({exc}). Fix: pip install --no-deps "
                f"{NO_DEPS[module]} (its own pins conflict with Ray's; bash setup.sh does this)"
            ) from None
        extra = EXTRA_OF[module]
        raise ConfigError(
            f"{purpose} needs {module}, which cannot be imported ({exc}). Fix: pip install -e '.[{extra}]' "
            "in the repository (bash setup.sh installs every extra)"
        ) from None
    old = too_old(module)
    if old:
        raise ConfigError(
            f"{purpose}: {old}. Fix: pip install -e '.[{EXTRA_OF[module]}]' (a cluster running an older "
            "release needs upgrading too: its nodes and this client must run the same version)"
        )
    return imported
