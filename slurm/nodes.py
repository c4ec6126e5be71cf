"""What a Slurm job needs of the node it lands on: an address other nodes can reach, and the
sweep's storage at the paths the login node gave.

Many images resolve their own hostname to a loopback address (127.0.1.1 on Debian and Ubuntu), so
a Ray head advertising it cannot be joined from another node; and a sweep folder or data cache on a
node-local disk lets each node write where the driver never looks. Both are checked before any
training, with the fix named.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")  # typical node-local paths; tmpfs mounts are found too


class NodeError(RuntimeError):
    """This node cannot take part in the job as it is set up."""


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def node_ip(hostname: str, nodes: int) -> str:
    """The IPv4 address this node is reached at: the hostname's first non-loopback address; in a
    one-node job, whatever it resolves to; else the address of the route out (what Ray itself uses
    by default)."""
    try:
        resolved = [info[4][0] for info in socket.getaddrinfo(hostname, None, socket.AF_INET)]
    except OSError:
        resolved = []
    for address in resolved:
        if not _loopback(address):
            return address
    if nodes == 1 and resolved:  # nothing outside this node needs to reach it
        return resolved[0]
    from ray.util import get_node_ip_address

    routed = get_node_ip_address()
    if not _loopback(routed):
        return routed
    raise NodeError(
        f"node {hostname} has no address other nodes can reach: its hostname resolves to "
        f"{', '.join(resolved) or 'nothing'} and its route out to {routed}. Give the node a resolvable "
        "address (an /etc/hosts line for its hostname, or DNS), or run on one node (--nodes 1)"
    )


def check_node_sees(store_root: str | Path, data_dir: str | Path | None, hostname: str) -> None:
    """Refuse to train on a node that does not see the sweep folder (its sweep.json, written by the
    login node before submitting) or the data cache."""
    missing = []
    if not (Path(store_root) / "sweep.json").is_file():
        missing.append(f"the sweep folder {store_root} (--out)")
    if data_dir is not None and not Path(data_dir).is_dir():
        missing.append(f"the data cache {data_dir} (data_dir)")
    if missing:
        raise NodeError(
            f"node {hostname} does not see {' or '.join(missing)}: --out, data_dir and the checkout must "
            "be on storage every node mounts at the same path (a shared filesystem, not /tmp or a "
            "node's local disk)"
        )


def node_local_paths(paths: dict[str, Path]) -> list[str]:
    """Which of the named paths are on node-local storage (under /tmp and the like, or on tmpfs)."""
    mounts = _tmpfs_mounts()
    found = []
    for name, path in paths.items():
        resolved = str(Path(path).resolve())
        local = [
            p for p in (*NODE_LOCAL, *mounts) if resolved == p or resolved.startswith(p.rstrip("/") + "/")
        ]
        if local:
            found.append(f"{name} {resolved} (under {local[0]})")
    return found


def _tmpfs_mounts() -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [
        fields[1] for fields in (line.split() for line in lines) if len(fields) > 2 and fields[2] == "tmpfs"
    ]


def keep_ray_logs(temp_dir: str, destination: Path) -> None:
    """Copy a Ray node's logs out of its node-local temp dir (gone with the job) to the sweep's
    storage, then remove the temp dir."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    try:
        if logs.is_dir():
            shutil.copytree(logs, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
    except OSError as exc:
        log.warning("could not keep Ray's logs %s in %s: %s", logs, destination, exc)
    shutil.rmtree(temp_dir, ignore_errors=True)
