"""Whether the Ray cluster at --address answers, in seconds: ray.init retries an address where
nothing listens, or where something that is not Ray listens, for minutes without a word."""

from __future__ import annotations

import os

from bilateral.errors import ConfigError
from bilateral.reach import TIMEOUT_S, host_port, tcp


def grpc_ready(host: str, port: int, timeout: float = TIMEOUT_S) -> str:
    """'' when a gRPC server (Ray's GCS speaks gRPC) completes its handshake at host:port, else why not."""
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return f"no gRPC handshake within {timeout:g} s (something that is not Ray's GCS listens there)"
    finally:
        channel.close()
    return ""


def check_ray_address(address: str) -> None:
    """Refuse, naming the fix, an --address where no Ray cluster answers ('auto' and 'local' are Ray's
    own lookups)."""
    if address in ("auto", "local"):
        return
    host, port = host_port(address, "--address")
    tried = f"a TCP connection to {host}:{port}"
    problem = tcp(host, port)
    if not problem and os.environ.get("RAY_USE_TLS", "0") in ("0", ""):  # TLS: no plain handshake
        tried, problem = f"a gRPC handshake with {host}:{port}", grpc_ready(host, port)
    if problem:
        raise ConfigError(
            f"the Ray cluster at {address} does not answer: {tried} got '{problem}'. Fix: give the "
            f"address `ray status` prints on the head node (Ray's port is 6379 by default), start the "
            f"cluster there (`ray start --head --port {port}`), or leave --address out to start Ray on "
            "this machine"
        )
