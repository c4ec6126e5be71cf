"""launch/bench.py runs end to end and prints its tables with ratios (no timing is asserted: the
speed figures are read from its output, never checked by tests)."""

import re

from launch.bench import main
from tests.conftest import REPO

DATA = ["--data", "synthetic", "--data-dir", str(REPO / "data")]


def rows(out: str) -> list[list[str]]:
    """The cells of the markdown table rows of out (header and rule excluded)."""
    lines = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|--")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_train_benchmark_prints_ratios_and_projections(capsys):
    argv = ["train", *DATA, "--device", "cpu", "--width", "0.125", "--subset", "600", "--batch-size", "64"]
    assert main([*argv, "--warmup", "1", "--steps", "1", "--rounds", "2", "--fuse", "2"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert [r[0] for r in table][:2] == ["baseline: torch DataLoader + PIL, fp32", "memory"]
    assert table[-1][0] == "memory, fused K=2" and table[0][3] == "1.00x"
    assert all(re.fullmatch(r"\d+\.\d\dx", r[3]) and float(r[4]) > 0 for r in table)
    assert all(re.fullmatch(r"\d+%", r[5]) for r in table)
    assert out.count("round 2/2, memory, fused K=2:") == 1  # every variant timed in each round
    assert re.search(r"fast: \d+\.\d h", out) and re.search(r"paper: \d+\.\d h", out)


def test_pack_benchmark_compares_sequential_packed_and_fused(capsys):
    argv = ["pack", *DATA, "--device", "cpu", "--widths", "0.125", "--runs", "2", "--threads", "2"]
    assert main([*argv, "--subset", "600", "--batch-size", "64", "--warmup", "1", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    modes = [r[1].split(" (")[0] for r in rows(out)]
    assert modes == ["sequential", "packed", "fused"] and rows(out)[0][3] == "1.00x"
    assert re.search(r"width 0\.125: fastest is (sequential|packed|fused)", out)


def test_loader_benchmark_rates_against_torch(capsys):
    argv = ["loaders", *DATA, "--device", "cpu", "--loaders", "torch,memory", "--subset", "600"]
    assert main([*argv, "--workers", "1"]) == 0
    table = rows(capsys.readouterr().out)
    assert [r[0] for r in table] == ["torch", "memory"] and table[0][3] == "1.00x"
