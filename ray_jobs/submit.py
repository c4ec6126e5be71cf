"""What `ray job submit` runs: a whole sweep on the Ray cluster the job lands on.

    export RAY_AUTH_MODE=disabled     # or pass the cluster's token (Ray >= 2.60)
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python ray_jobs/submit.py --preset smoke --out /shared/bilateral/results

Takes every flag of launch/sweep.py; --cluster ray and --address auto are implied. The job runs in
a temporary copy of the working directory, so results and dataset caches default to absolute
paths: --out ~/bilateral/results and data_dir=~/bilateral/data (use shared storage on a
multi-node cluster). results/summary.csv is then ~/bilateral/results/summary.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.sweep import cli  # noqa: E402

HOME = Path.home() / "bilateral"


def job_argv(argv: list[str]) -> list[str]:
    defaults = ["--cluster", "ray", "--address", "auto"]
    if "--out" not in argv:
        defaults += ["--out", str(HOME / "results")]
    if not any(a.startswith("data_dir=") for a in argv):
        defaults.append(f"data_dir={HOME / 'data'}")
    return defaults + argv


if __name__ == "__main__":
    sys.exit(cli(job_argv(sys.argv[1:])))
