"""Start and stop a single-node Ray cluster on loopback, for tests and local trials.

Token auth is OFF for this cluster (ENV; start() says so on stderr) unless start() is given a token
file: it is the project's own test cluster on one machine. Any cluster that other people can reach
keeps Ray's token auth on (ray_jobs/auth.py, docs/ray.md).

    python ray_jobs/cluster.py start --num-cpus 4 --state /tmp/bilateral-ray.json
    python ray_jobs/cluster.py stop --state /tmp/bilateral-ray.json

`ray stop` would kill every Ray process on the machine; stop here kills only the processes of the
cluster that start created: those whose command line names its private --temp-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

RAY_CLI = Path(sys.executable).with_name("ray")  # the ray command of this environment, not PATH's
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # this test cluster only: see above
# The ports every Ray node opens (a head adds --port, --ray-client-server-port and --dashboard-port). Every
# one is picked free: a default one (the job agent's 52365) may still be held by another Ray on this
# machine, and the node then comes up without an agent to take jobs.
PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


_GIVEN: set[int] = set()  # ports this process handed out: the kernel may offer a just-closed one again


def free_port() -> int:
    """A port free on every interface (good for a loopback node and for one on a node's address), and
    not one this process gave before: Ray refuses to start when two of its components share one."""
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def start(num_cpus: int, state: Path, timeout_s: float = 120.0, token: Path | None = None) -> dict:
    """Start a head node and wait until it takes jobs; returns {address, dashboard, temp_dir} and writes
    it to `state`. With a token file (ray_jobs/auth.py write_token), the cluster requires it."""
    temp_dir = f"/tmp/bilateral-ray-{uuid.uuid4().hex[:8]}"
    port, dashboard = free_port(), free_port()
    ports = {flag: free_port() for flag in PORT_FLAGS}
    env = {**os.environ, **ENV, "PATH": f"{RAY_CLI.parent}:{os.environ.get('PATH', '')}"}
    if token is not None:
        from ray_jobs.auth import use_token  # not from the command line, which runs this as a script

        use_token(token, env)
    else:
        print(
            "ray_jobs/cluster.py: starting a single-node Ray test cluster with token auth OFF "
            "(RAY_AUTH_MODE=disabled): every user of this machine can run code on it. For a cluster "
            "others can reach, keep token auth on (docs/ray.md).",
            file=sys.stderr,
        )
    cmd = [
        str(RAY_CLI),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--disable-usage-stats",
        "--include-dashboard=true",
        f"--ray-client-server-port={free_port()}",
        *(f"{flag}={number}" for flag, number in ports.items()),
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    info = {
        "address": f"127.0.0.1:{port}",
        "dashboard": f"http://127.0.0.1:{dashboard}",
        "temp_dir": temp_dir,
    }
    agent = f"http://127.0.0.1:{ports['--dashboard-agent-listen-port']}/api/healthz"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token is not None else {}
    try:
        _wait_for_http([f"{info['dashboard']}/api/version", agent], timeout_s, headers)
    except BaseException:
        stop_processes(temp_dir)
        raise
    state.write_text(json.dumps(info))
    return info


def _wait_for_http(urls: list[str], timeout_s: float, headers: dict[str, str]) -> None:
    """`ray start` returns before the dashboard's job agent listens: until it does, `ray job submit`
    fails ("No available agent to submit job"). Wait until each URL answers 200."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + timeout_s
    for url in urls:
        while True:
            try:
                with no_proxy.open(urllib.request.Request(url, headers=headers), timeout=5):
                    break
            except OSError as exc:  # refused, timed out, or an HTTP error (503 until its raylet is up)
                if time.time() > deadline:
                    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s: {exc}") from None
                time.sleep(0.5)


def _belongs(proc: Path, temp_dir: str) -> bool:
    if temp_dir.encode() in (proc / "cmdline").read_bytes():
        return True
    for fd in (proc / "fd").iterdir():  # agents retitle themselves ray::...; their logs stay open
        try:
            if os.readlink(fd).startswith(temp_dir):
                return True
        except OSError:
            continue
    return False


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the Ray node started with --temp-dir=temp_dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if _belongs(proc, temp_dir):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def stop(state: Path, grace_s: float = 10.0) -> int:
    """Stop the cluster that start() recorded in `state`; returns how many processes it had."""
    count = stop_processes(json.loads(state.read_text())["temp_dir"], grace_s)
    state.unlink(missing_ok=True)
    return count


def stop_processes(temp_dir: str, grace_s: float = 10.0) -> int:
    """Terminate the Ray node using temp_dir: SIGTERM, then SIGKILL after grace_s; returns how many."""
    pids = cluster_pids(temp_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    for sig in (signal.SIGKILL, None):
        deadline = time.time() + grace_s
        while time.time() < deadline and cluster_pids(temp_dir):
            time.sleep(0.2)
        for pid in cluster_pids(temp_dir) if sig else ():
            _signal(pid, sig)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--state", type=Path, default=Path("/tmp/bilateral-ray.json"))
    a = p.parse_args()
    if a.action == "start":
        print(json.dumps(start(a.num_cpus, a.state)))
    else:
        print(f"stopped {stop(a.state)} processes")
