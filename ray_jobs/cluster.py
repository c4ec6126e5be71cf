"""Start and stop a single-node Ray cluster on loopback, for tests and local trials.

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
import uuid
from pathlib import Path

ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(num_cpus: int, state: Path) -> dict:
    """Start a head node; returns {address, dashboard, temp_dir} and writes it to `state`."""
    temp_dir = f"/tmp/bilateral-ray-{uuid.uuid4().hex[:8]}"
    port, dashboard = free_port(), free_port()
    ray = Path(sys.executable).with_name("ray")
    env = {**os.environ, **ENV, "PATH": f"{ray.parent}:{os.environ.get('PATH', '')}"}
    cmd = [
        str(ray),
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
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    info = {
        "address": f"127.0.0.1:{port}",
        "dashboard": f"http://127.0.0.1:{dashboard}",
        "temp_dir": temp_dir,
    }
    state.write_text(json.dumps(info))
    return info


def cluster_pids(temp_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if temp_dir.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def stop(state: Path, grace_s: float = 10.0) -> int:
    """Terminate this cluster's processes (SIGTERM, then SIGKILL after grace_s); returns how many."""
    temp_dir = json.loads(state.read_text())["temp_dir"]
    pids = cluster_pids(temp_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and cluster_pids(temp_dir):
        time.sleep(0.2)
    for pid in cluster_pids(temp_dir):
        _signal(pid, signal.SIGKILL)
    deadline = time.time() + grace_s
    while time.time() < deadline and cluster_pids(temp_dir):
        time.sleep(0.2)
    state.unlink(missing_ok=True)
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
