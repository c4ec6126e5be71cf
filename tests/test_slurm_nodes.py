"""What a Slurm job checks of its node (slurm/nodes.py): an address other nodes can reach (a Ray head
advertising 127.0.1.1 cannot be joined), the sweep's storage at the login node's paths, and Ray's
logs kept on that storage when the node-local temp dir goes."""

import socket

import pytest
import ray.util

from slurm import nodes
from slurm.nodes import NodeError, check_node_sees, keep_ray_logs, node_ip, node_local_paths


def resolving_to(monkeypatch, *addresses: str, routed: str) -> None:
    infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in addresses]
    monkeypatch.setattr(nodes.socket, "getaddrinfo", lambda *args, **kwargs: infos)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: routed)


def test_a_hostname_resolving_to_loopback_takes_the_address_of_the_route_out(monkeypatch):
    resolving_to(monkeypatch, "127.0.1.1", routed="10.1.2.3")
    assert node_ip("gpu-node-7", nodes=2) == "10.1.2.3"
    resolving_to(monkeypatch, "127.0.1.1", "10.9.9.9", routed="10.1.2.3")
    assert node_ip("gpu-node-7", nodes=2) == "10.9.9.9"  # the hostname's own, where it has one


def test_a_node_no_other_node_can_reach_is_refused_unless_it_is_alone(monkeypatch):
    resolving_to(monkeypatch, "127.0.1.1", routed="127.0.0.1")
    with pytest.raises(NodeError, match="gpu-node-7 has no address other nodes can reach.*/etc/hosts"):
        node_ip("gpu-node-7", nodes=2)
    assert node_ip("gpu-node-7", nodes=1) == "127.0.1.1"


def test_a_node_that_does_not_see_the_sweep_or_the_data_stops_naming_them(tmp_path):
    with pytest.raises(
        NodeError, match=r"node n1 does not see the sweep folder .* \(--out\) or the data cache"
    ):
        check_node_sees(tmp_path / "sweep", tmp_path / "data", "n1")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    (tmp_path / "data").mkdir()
    check_node_sees(tmp_path / "sweep", tmp_path / "data", "n1")


def test_node_local_paths_are_named():
    found = node_local_paths({"--out": "/tmp/results", "data_dir": "/dev/shm/data", "the checkout": "/"})
    assert found == ["--out /tmp/results (under /tmp)", "data_dir /dev/shm/data (under /dev/shm)"]


def test_ray_logs_are_kept_on_the_sweeps_storage_and_the_temp_dir_removed(tmp_path):
    temp = tmp_path / "bilateral-ray-7-0"
    logs = temp / "session_latest" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("raylet started")
    keep_ray_logs(str(temp), tmp_path / "sweep" / "ray-logs" / "task0-n1-restart0")
    assert (
        tmp_path / "sweep" / "ray-logs" / "task0-n1-restart0" / "raylet.out"
    ).read_text() == "raylet started"
    assert not temp.exists()
