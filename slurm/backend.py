"""--cluster slurm for launch/sweep.py (not implemented yet)."""

from __future__ import annotations

import argparse

from bilateral.config import SweepConfig
from bilateral.errors import BilateralError
from bilateral.experiment import Plan
from bilateral.store import SweepStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of this backend; keep imports of heavy libraries out of module scope."""


def run(args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore) -> dict[str, str]:
    """Run every unfinished run of the plan; return {run_id: error} of those that failed."""
    raise BilateralError("--cluster slurm is not available yet: use --cluster local")
