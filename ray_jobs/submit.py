"""What `ray job submit` runs: a whole sweep on the Ray cluster the job lands on.

    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/auth_token   # the cluster's token
    RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES=__pycache__ ray job submit \\
        --address http://127.0.0.1:8265 --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \\
        python -m ray_jobs.submit --preset smoke --out /shared/bilateral/results

Ray leaves .git out of a job's working directory unless RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES
says otherwise (runtime_env.yaml still leaves out .venv, data and results); without it the job says
so, and its records cannot name the commit that trained them (versions.git_commit is null).

Takes every flag of launch/sweep.py; --cluster ray and --address auto are implied. The job runs in
a temporary copy of the working directory, so results and dataset caches default to absolute
paths: --out ~/bilateral/results and data_dir=~/bilateral/data (use shared storage on a
multi-node cluster). results/summary.csv is then ~/bilateral/results/summary.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.sweep import cli

HOME = Path.home() / "bilateral"


def job_argv(argv: list[str]) -> list[str]:
    defaults = ["--cluster", "ray", "--address", "auto"]
    if "--out" not in argv:
        defaults += ["--out", str(HOME / "results")]
    if not any(a.startswith("data_dir=") for a in argv):
        defaults.append(f"data_dir={HOME / 'data'}")
    return defaults + argv


def warn_without_git(repo: Path) -> None:
    """A job whose working directory came without .git trains fine, but its records name no commit."""
    if not (repo / ".git").is_dir():
        print(
            "ray_jobs/submit.py: this job's copy of the code has no .git, so its records cannot name the "
            "commit that trained them (versions.git_commit is null). Submit with "
            "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES=__pycache__ ray job submit ... (docs/ray.md)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    warn_without_git(Path(__file__).resolve().parents[1])
    sys.exit(cli(job_argv(sys.argv[1:])))
