"""--cluster slurm --engine ray: one Slurm allocation of --nodes nodes; a Ray head on the first,
a Ray worker on every other, and the Ray backend (ray_jobs/backend.py) runs the sweep there.

One Slurm task per node runs `RayAllocation`: each first checks that it sees the sweep folder and
takes an address other nodes can reach (slurm/nodes.py); task 0 starts `ray start --head --block`
on free ports with a private node-local --temp-dir, whose logs go to <sweep>/slurm/<job>/ray-logs/
when the task ends, writes its address to <sweep>/slurm/<job>/ray-head.json, runs
ray_jobs.backend.run(...) against it and returns its {run_id: error}; every other task starts
`ray start --address <head> --block` and waits until task 0 writes ray-done. Each `ray start
--block` is stopped with SIGTERM, which stops exactly the Ray processes it started.

Token auth is on: task 0 writes a fresh token per job attempt to <sweep>/slurm/<job>/ray-token
(mode 0600, before ray-head.json), and every node, the driver and the workers use it; another user of
the allocation's nodes who reaches the Ray ports is refused. The token is deleted when the job ends.

The job is Checkpointable like the job arrays: on USR2 (time limit or preemption) the whole
allocation is requeued, Ray starts again, and unfinished runs resume from their last checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit

from bilateral.config import SweepConfig
from bilateral.plan import Plan
from bilateral.store import SweepStore, write_json
from ray_jobs.auth import use_token, write_token
from ray_jobs.cluster import PORT_FLAGS, RAY_CLI, free_port, stop_processes
from slurm.nodes import check_node_sees, keep_ray_logs, node_ip

log = logging.getLogger(__name__)


class RayAllocation(submitit.helpers.Checkpointable):
    """What each Slurm task (one per node) of the Ray allocation runs."""

    def __init__(self, cpus_per_node: int, gpus_per_node: int, timeout_s: float = 300.0):
        self.cpus_per_node, self.gpus_per_node, self.timeout_s = cpus_per_node, gpus_per_node, timeout_s

    def __call__(
        self, args: argparse.Namespace, cfg: SweepConfig, plan: Plan, root: str
    ) -> dict[str, str] | None:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S", force=True
        )
        env = submitit.JobEnvironment()
        check_node_sees(root, None, env.hostname)  # before starting Ray: a clear error, not a timeout
        folder = Path(root) / "slurm" / env.job_id
        head_file, done_file, token = folder / "ray-head.json", folder / "ray-done", folder / "ray-token"
        if env.global_rank == 0:
            head_file.unlink(missing_ok=True)  # from an earlier attempt of a requeued job
            done_file.unlink(missing_ok=True)
            write_token(token)  # before ray-head.json: a node that sees the head finds its token
        ip = node_ip(env.hostname, env.num_nodes)
        temp_dir = f"/tmp/bilateral-ray-{env.job_id}-{env.global_rank}"  # short: Ray's socket paths
        cmd = [
            str(RAY_CLI),
            "start",
            "--block",
            f"--node-ip-address={ip}",
            f"--num-cpus={self.cpus_per_node}",
            f"--num-gpus={self.gpus_per_node}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *(f"{flag}={free_port()}" for flag in PORT_FLAGS),
        ]
        if env.global_rank == 0:
            address = f"{ip}:{free_port()}"
            cmd += [
                "--head",
                f"--port={address.split(':')[1]}",
                f"--ray-client-server-port={free_port()}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={free_port()}",
            ]
        else:
            address = self._wait_for(head_file)["address"]
            cmd += [f"--address={address}"]
        path = f"{RAY_CLI.parent}:{os.environ['PATH']}"
        ray_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
        use_token(token, ray_env)
        log.info("task %d on %s: %s", env.global_rank, env.hostname, " ".join(cmd))
        ray = subprocess.Popen(cmd, env=ray_env, stdout=sys.stdout, stderr=sys.stderr)
        try:
            if env.global_rank == 0:
                use_token(token, os.environ)  # this driver, and through it the Ray backend
                return self._drive(args, cfg, plan, root, address, head_file, done_file, ray, env.num_tasks)
            while not done_file.exists():  # a worker node serves until the sweep is over
                if ray.poll() is not None:
                    raise RuntimeError(f"ray start (worker) exited with {ray.returncode}")
                time.sleep(1)
            return None
        finally:
            _stop(ray)
            stop_processes(temp_dir)  # the agents outlive `ray start --block`
            restart = os.environ.get("SLURM_RESTART_COUNT", "0")
            name = f"task{env.global_rank}-{env.hostname}-restart{restart}"
            keep_ray_logs(temp_dir, folder / "ray-logs" / name)
            if env.global_rank == 0:
                token.unlink(missing_ok=True)

    def _drive(self, args, cfg, plan, root, address, head_file, done_file, ray, nodes: int) -> dict[str, str]:
        import ray as ray_lib

        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        deadline = time.time() + self.timeout_s
        while True:  # the head answers once GCS is up
            if ray.poll() is not None:
                raise RuntimeError(f"ray start --head exited with {ray.returncode}")
            probe = subprocess.run(
                [str(RAY_CLI), "status", f"--address={address}"],
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"Ray head at {address} did not come up: {probe.stderr[-2000:]}")
            time.sleep(1)
        write_json(head_file, {"address": address})
        self._wait_for_nodes(address, nodes, deadline)
        from ray_jobs import backend

        args = copy.copy(args)
        args.address = address
        try:
            return backend.run(args, cfg, plan, SweepStore(root))
        finally:
            done_file.touch()
            if ray_lib.is_initialized():
                ray_lib.shutdown()

    def _wait_for(self, path: Path) -> dict:
        deadline = time.time() + self.timeout_s
        while not path.is_file():
            if time.time() > deadline:
                raise RuntimeError(f"no Ray head after {self.timeout_s:.0f}s ({path} missing)")
            time.sleep(0.5)
        return json.loads(path.read_text())

    def _wait_for_nodes(self, address: str, nodes: int, deadline: float) -> None:
        import ray as ray_lib

        ray_lib.init(address=address, logging_level=logging.WARNING)
        try:
            while len([n for n in ray_lib.nodes() if n["Alive"]]) < nodes:
                if time.time() > deadline:
                    raise RuntimeError(f"only {len(ray_lib.nodes())} of {nodes} Ray nodes joined")
                time.sleep(1)
            log.info("Ray cluster up: %d node(s), %s", nodes, ray_lib.cluster_resources())
        finally:
            ray_lib.shutdown()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block`: it stops the Ray processes it started, and only those."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
