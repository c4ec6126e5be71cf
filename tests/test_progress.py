"""Progress piped to a file reads as clean lines: no bars, no carriage returns or cursor moves, and
the runs done / total and each epoch's line (with its images/s) instead; the smoke preset's table
comes after the line that says it is a toy-scale machinery check."""

import subprocess

from bilateral.execution import cpu_computes_bf16
from bilateral.report import REAL_COMPARISON
from bilateral.store import SweepStore
from tests.conftest import sweep_cmd


def test_a_piped_sweep_prints_clean_lines_with_its_progress(tmp_path):
    cmd = sweep_cmd(tmp_path, "--seeds", "0", "--models", "hemisphere-fine", "train.epochs=2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "\x1b" not in output and "\r" not in output
    assert "runs done 1/1" in proc.stderr
    epochs = [line for line in proc.stderr.splitlines() if " epoch " in line and "img/s" in line]
    assert len(epochs) == 2, proc.stderr[-2000:]
    table = proc.stdout.index("| model")
    assert proc.stdout.index("A machinery check at toy scale, not a result") < table
    assert proc.stdout.index(REAL_COMPARISON) < table
    (record,) = SweepStore(tmp_path / "t").read_records()[0]  # smoke trains as fast as this CPU can
    assert record["spec"]["train"]["channels_last"] is True
    assert record["precision"] == ("bf16" if cpu_computes_bf16() else "fp32")
