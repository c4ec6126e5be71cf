"""Tune every row of a comparison with the same budget, on validation, with Ray Tune (Optuna + ASHA).

    python launch/tune.py --experiment core --preset small --data cifar10-hier4:../shared/data/cifar10-jpg
    python launch/tune.py --experiment core --preset fast --data cifar100 --budget gpu --address auto
    python launch/tune.py --models hemisphere-fine,unilateral --trials 4 train.epochs=1 --dry-run

Each row (and each row a run depends on, first) gets `--budget`'s trials on the tuning seeds, never
the comparison's; each trial is a normal run in results/<name>/runs/ that never evaluates the test
split. The result is results/<name>/tuned.yaml, each row's chosen settings, which a sweep takes as
its config:

    python launch/sweep.py --config results/<name>/tuned.yaml --experiment core --preset small --data ...

with trials.csv (every trial), report.md (space, budget, choices) and convergence.png beside it.
Rerun the same command after a crash or a kill: finished rows and trials are kept (docs/tuning.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from bilateral.config import PRESETS, SweepConfig, parse_seeds
from bilateral.errors import BilateralError, ConfigError
from bilateral.extras import require
from bilateral.flags import ranged
from bilateral.tuning.rows import own_runs, row_order, tuning_config, tuning_plan
from bilateral.tuning.space import BUDGETS, Budget, SearchSpace, load_space
from launch.backends import add_placement_arguments
from launch.sweep import resolve_config

log = logging.getLogger("tune")


def parse_args(argv: list[str]) -> argparse.Namespace:
    from ray_jobs import backend

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    p.add_argument("--config", help="YAML file of overrides, applied after the preset")
    p.add_argument("--data", help="dataset spec, as launch/sweep.py takes it")
    p.add_argument("--backbone", help="hemisphere backbone, as launch/sweep.py takes it")
    p.add_argument("--loader", choices=["memory", "ffcv", "torch"], help="data.loader")
    p.add_argument("--experiment", help="the comparison whose rows are tuned (default paper)")
    p.add_argument("--models", help="comma-separated rows to tune (their dependencies are tuned too)")
    p.add_argument("--device", help="auto (cuda if available) | cpu | cuda")
    p.add_argument("--out", help="results root (default results)")
    p.add_argument("--name", help="results/<name>/ of the tuning (default tune-<preset>-<data>-<experiment>)")
    p.add_argument(
        "--budget", choices=sorted(BUDGETS), default="small", help="trials, seeds and ASHA per row"
    )
    p.add_argument("--trials", type=ranged(int, 1), help="trials per row (overrides the budget's)")
    p.add_argument(
        "--tune-seeds", help="tuning seeds, e.g. 100,101 (overrides the budget's; never a sweep's)"
    )
    p.add_argument(
        "--grace", type=ranged(int, 1), help="ASHA: epochs every trial trains (overrides the budget's)"
    )
    p.add_argument("--space", help="search space YAML (default bilateral/tuning/space.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the rows, their spaces and the budget")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. train.epochs=2")
    add_placement_arguments(p)
    backend.add_arguments(p.add_argument_group("Ray"))
    p.set_defaults(seeds=None, fuse=1)  # resolve_config reads --seeds: the comparison's, from its preset
    return p.parse_intermixed_args(argv)


def budget_of(args: argparse.Namespace) -> Budget:
    budget = BUDGETS[args.budget]
    changes = {"trials": args.trials, "grace": args.grace}
    if args.tune_seeds:
        changes["seeds"] = tuple(parse_seeds(args.tune_seeds))
    return dataclasses.replace(budget, **{k: v for k, v in changes.items() if v is not None})


def describe(cfg: SweepConfig, space: SearchSpace, budget: Budget) -> str:
    base = tuning_config(cfg, budget)
    plan = tuning_plan(base, {})
    lines = [f"budget: {budget.describe()}", "rows, in the order they are tuned:"]
    for key in row_order(plan, list(budget.seeds)):
        spec = own_runs(plan, key, list(budget.seeds))[0]
        dims = ", ".join(
            f"{k} in {d.bounds(v)[0]:.3g}..{d.bounds(v)[1]:.3g}" for k, (d, v) in space.for_run(spec).items()
        )
        lines.append(f"  {key:40} {spec.train.epochs} epochs; {dims}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.workers_per_run != 1:
        raise ConfigError("--workers-per-run: tuning trials train in one process each; leave it at 1")
    cfg = resolve_config(args)
    experiment = Path(cfg.plan.experiment).stem
    name = args.name or f"tune-{cfg.preset}-{cfg.data.source.split(':')[0]}-{experiment}"
    cfg = dataclasses.replace(cfg, name=name)
    space, budget = load_space(args.space), budget_of(args)
    shared = sorted(set(budget.seeds) & set(cfg.plan.seeds))
    if shared:
        raise ConfigError(
            f"tuning seeds {shared} are also the comparison's seeds (plan.seeds={cfg.plan.seeds}): tune on "
            "other seeds (--tune-seeds 100) so the comparison is measured on seeds that chose nothing"
        )
    root = Path(cfg.out) / name
    if args.dry_run:
        print(f"tuning {name} -> {root}\n{describe(cfg, space, budget)}")
        return 0
    for module in ("ray", "optuna", "matplotlib"):
        require(module, "launch/tune.py")
    about = (
        f"Chosen by launch/tune.py on validation alone (the test split was never evaluated): comparison "
        f"{experiment}, preset {cfg.preset}, data {cfg.data.source}.\n{budget.describe()}.\n"
        f"Use: python launch/sweep.py --config {root / 'tuned.yaml'} --experiment {cfg.plan.experiment} "
        f"--preset {cfg.preset} --data {cfg.data.source} (on seeds other than the tuning seeds)"
    )
    with ray_cluster(args) as resources:
        path = tune(args, cfg, space, budget, root, resources, about)
    print(f"wrote {path}, {root / 'trials.csv'} and {root / 'report.md'}\n{about.splitlines()[-1]}")
    return 0


def tune(
    args: argparse.Namespace,
    cfg: SweepConfig,
    space: SearchSpace,
    budget: Budget,
    root: Path,
    resources: dict,
    about: str,
) -> Path:
    from bilateral.store import SweepStore
    from ray_jobs import backend
    from ray_jobs.tune import tune_comparison

    placement = backend.ray_placement(args, cfg, resources)
    if placement.note:
        log.warning("%s", placement.note)
    executor = backend.TuneExecutor(args, cfg, SweepStore(root), resources.get("CPU", 0.0), placement)
    trial = backend.trial_resources(placement)
    return tune_comparison(cfg, space, budget, root, placement, trial, executor, about, args.max_failures)


@contextlib.contextmanager
def ray_cluster(args: argparse.Namespace) -> Iterator[dict]:
    """The Ray cluster at --address, or a local one started here; yields its resources."""
    import ray

    from ray_jobs.backend import connect

    connect(args.address, args.num_cpus)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def cli(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        return main(argv)
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
