"""launch/bench.py runs end to end and prints its tables with ratios (no timing is asserted: the
speed figures are read from its output, never checked by tests)."""

import re

import pytest
import torch

from bilateral.config import load_config
from bilateral.execution import cpu_computes_bf16
from launch.bench import Overheads, _projected_hours, _variant_for, main
from tests.conftest import REPO

DATA = ["--data", "synthetic", "--data-dir", str(REPO / "data")]


def tables(out: str) -> list[list[list[str]]]:
    """The cells of each markdown table of out, row by row, the header first (the rule left out)."""
    found: list[list[list[str]]] = []
    table = None
    for line in out.splitlines():
        if not line.startswith("|"):
            table = None
        elif not line.startswith("|--"):
            if table is None:
                table = []
                found.append(table)
            table.append([cell.strip() for cell in line.strip("|").split("|")])
    return found


def rows(out: str) -> list[list[str]]:
    """The cells of the first table's rows (header excluded)."""
    return tables(out)[0][1:]


def test_train_benchmark_prints_ratios_and_projections(capsys, monkeypatch):
    """... and a variant that fails (here torch.compile as without a C compiler) loses its own row
    only, and the exit status says so."""

    def compile_without_a_compiler(model, **kwargs):  # fails at the first call, as torch.compile does
        def fail(*args, **kwargs):
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable")

        return fail

    monkeypatch.setattr(torch, "compile", compile_without_a_compiler)
    argv = ["train", *DATA, "--device", "cpu", "--width", "0.125", "--subset", "600", "--batch-size", "64"]
    assert main([*argv, "--warmup", "1", "--steps", "1", "--rounds", "2", "--fuse", "2", "--compile"]) == 1
    out = capsys.readouterr().out
    *table, failed = rows(out)
    assert failed[:2] == ["memory + compile", "FAILED: RuntimeError: Failed to find C compiler. Please "
                          "specify via CC environment variable"]  # fmt: skip
    assert "FAILED to build: memory + compile" in out and "round 1/2, memory + compile" not in out
    assert [r[0] for r in table][:2] == ["baseline: torch DataLoader + PIL, fp32", "memory"]
    assert table[-1][0] == "memory, fused K=2" and table[0][3] == "1.00x"
    assert all(re.fullmatch(r"\d+\.\d\dx", r[3]) and float(r[4]) > 0 for r in table)
    assert all(re.fullmatch(r"\d+%", r[5]) for r in table)
    assert out.count("round 2/2, memory, fused K=2:") == 1  # every variant timed in each round
    header, *projection = tables(out)[1]
    hours_columns = ["training h", "evaluation h", "checkpoint h", "total h"]
    assert header == ["preset", "variant", "images/s", *hours_columns]
    # `fast` trains in bf16 on a CPU with bf16 instructions; elsewhere in fp32, with channels_last alone
    bf16 = cpu_computes_bf16()
    assert [r[:2] for r in projection] == [
        ["fast", "memory + channels_last + bf16" if bf16 else "memory + channels_last"],
        ["paper", "memory"],
        ["authors", "memory"],
    ]
    assert ("fast: train.bf16=true, but this CPU has no bf16 instructions" in out) is not bf16
    assert "not measured" not in out  # both presets' variants were timed
    rates = {r[0]: r[1] for r in table}
    for row in projection:
        assert row[2] == rates[row[1]]  # projected from that variant's own rate
        hours = [float(cell.replace(",", "")) for cell in row[3:]]
        assert all(h > 0 for h in hours)  # evaluation and checkpoints are counted
        assert hours[-1] == pytest.approx(sum(hours[:-1]), rel=0.01)


def test_a_preset_whose_variant_was_not_timed_is_projected_from_the_closest_one_named():
    cfg = load_config("paper", overrides=["train.compile=true"])
    variants = [
        {"name": "memory", "loader": "memory"},
        {"name": "memory + channels_last", "loader": "memory", "channels_last": True},
        {"name": "memory, fused K=2", "loader": "memory", "compile": True, "fuse": 2},  # not one run
    ]
    variant, notes = _variant_for(cfg, torch.device("cpu"), variants)
    assert variant["name"] == "memory"
    assert notes == [
        "memory + compile was not measured in this invocation; projecting from the closest measured "
        "variant, memory (unlike in compile: time it with --compile)"
    ]


def test_projection_counts_checkpoints_every_checkpoint_every_epochs():
    overheads = Overheads(eval_s_per_image=1e-4, last_s=0.2, best_s=0.1)
    configs = [
        load_config("paper", overrides=["model.width=0.125", f"train.checkpoint_every={n}"]) for n in (1, 2)
    ]
    each, second = (_projected_hours(cfg, 1000.0, overheads) for cfg in configs)  # 180 epochs: 180, 90 writes
    assert second["checkpoint"] == pytest.approx(each["checkpoint"] / 2)
    assert (second["training"], second["evaluation"]) == (each["training"], each["evaluation"])
    assert each["evaluation"] > 0 and each["training"] > 0
    authors = _projected_hours(load_config("authors", overrides=["model.width=0.125"]), 1000.0, overheads)
    assert authors["evaluation"] == pytest.approx(each["evaluation"] / 2)  # validation every 2 epochs


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
