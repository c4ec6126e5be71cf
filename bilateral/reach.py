"""Whether an outside service answers, asked once before any training and with a deadline: a
mistyped host is an error in seconds, not a sweep that waits on it (or on a client's retries)."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from bilateral.errors import ConfigError

TIMEOUT_S = 8.0  # per attempt; every check below makes one


def tcp(host: str, port: int, timeout: float = TIMEOUT_S) -> str:
    """'' when host:port accepts a connection, else what happened."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def http(url: str, timeout: float = TIMEOUT_S) -> str:
    """'' when a server answers a GET of url with any HTTP status (401 and 404 are answers), else
    what happened."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return ""
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return getattr(reason, "strerror", None) or str(reason)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def host_port(address: str, flag: str) -> tuple[str, int]:
    """HOST:PORT (or scheme://HOST:PORT) as a pair; a ConfigError naming flag otherwise."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"{flag} {address!r} is not HOST:PORT: give e.g. 10.0.0.5:6379")
    return parts.hostname, port


def check_mlflow(uri: str) -> None:
    """An MLflow tracking server (train.mlflow=http[s]://...); its client retries for minutes."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    probe = uri.rstrip("/") + "/health"
    problem = http(probe)
    if problem:
        raise ConfigError(
            f"the MLflow tracking server at {uri} does not answer: GET {probe} got '{problem}'. Fix: "
            "correct train.mlflow, or start the server (`mlflow server --host 0.0.0.0 --port 5000`); "
            "train.mlflow=file:./mlruns (with MLFLOW_ALLOW_FILE_STORE=true) logs without a server, and "
            "leaving train.mlflow out turns MLflow off"
        )


def check_wandb(mode: str) -> None:
    """Weights & Biases online (train.wandb=online): its server, WANDB_BASE_URL or api.wandb.ai."""
    if mode != "online":
        return
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    problem = http(base)
    if problem:
        raise ConfigError(
            f"W&B's server at {base} does not answer: GET {base} got '{problem}'. Fix: check this "
            "machine's network (or WANDB_BASE_URL, for a W&B server of your own), or log offline: "
            "train.wandb=offline, then `wandb sync results/<sweep>/runs/*/wandb/offline-run-*`"
        )
