"""Ray token authentication (Ray >= 2.60) for the clusters the suite starts or joins.

Without a token anyone who can reach a Ray cluster's ports can run code as its user. So the suite
never turns auth off for a cluster it joins: `--address` clusters take their token from the user's
environment (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), and a missing one is
a clear error. Ray inside Slurm makes a fresh token per job (`write_token`), readable only by the
user, on the shared filesystem its nodes already use for the head's address. Only the project's own
single-node test cluster (ray_jobs/cluster.py) runs without auth, and it says so where it starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

from bilateral.errors import ConfigError

TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def write_token(path: Path) -> Path:
    """A fresh random token (256 bits, as Ray's own) at path, readable and writable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a token of an earlier attempt; O_EXCL below refuses any file there
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def use_token(path: Path, env: MutableMapping[str, str]) -> None:
    """Make the Ray processes started with env (nodes, drivers, their workers) use the token in path;
    a RAY_AUTH_TOKEN there would take precedence, so it goes."""
    env.pop("RAY_AUTH_TOKEN", None)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)})


def connect_error(address: str, exc: BaseException) -> ConfigError:
    """What to do when joining the cluster at address failed: Ray's own error says only 'Failed to
    connect' when the token is missing or wrong."""
    mode = os.environ.get("RAY_AUTH_MODE", "unset")
    given = [v for v in TOKEN_VARIABLES if os.environ.get(v)]
    return ConfigError(
        f"could not join the Ray cluster at {address} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
        f"here RAY_AUTH_MODE is {mode} and {' and '.join(given) or 'no token variable'} is set. Fix: check "
        "the address (`ray status --address ...`), and for a cluster with token auth export "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<a copy of its token file> (docs/ray.md)"
    )
