"""The front door: run the paper's comparison (or part of it) and write results/summary.csv.

    python launch/sweep.py                                       # smoke preset, synthetic data, CPU ok
    python launch/sweep.py --data cifar10-hier:../shared/data/cifar10-jpg     # real CIFAR-10 images
    python launch/sweep.py --preset paper --data cifar100:/datasets --device cuda
    python launch/sweep.py --models unilateral --seeds 0         # one run, in process (debug)
    python launch/sweep.py --dry-run                             # print stages, runs, dependencies
    python launch/sweep.py --preset fast --data cifar100 --fuse 10            # 10 small runs per GPU pass
    python launch/sweep.py train.epochs=2 optim.lr=1e-3          # key=value overrides of any config key

A rerun of the same command skips finished runs and resumes unfinished ones from their checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.contrib.logging import logging_redirect_tqdm

from bilateral.config import PRESETS, SweepConfig, load_config, parse_seeds, to_dict
from bilateral.contrasts import check_declared
from bilateral.data.sources import check_dataset_spec, class_counts, image_size_of, train_size_of
from bilateral.errors import BilateralError, ConfigError
from bilateral.extras import require
from bilateral.flags import ranged
from bilateral.interrupt import Interrupted, install
from bilateral.models.registry import BACKBONES
from bilateral.paths import check_dir, check_file
from bilateral.plan import Plan, RunSpec, build_plan, group_name
from bilateral.reach import check_mlflow, check_wandb
from bilateral.report import markdown, runs_table, write_report
from bilateral.store import SweepStore
from bilateral.sweep import check_one_configuration, fusion_groups
from launch.backends import BACKENDS, add_backend_arguments

log = logging.getLogger("sweep")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    p.add_argument("--config", help="YAML file of overrides, applied after the preset")
    p.add_argument(
        "--data",
        help="dataset spec: synthetic | cifar10-hier:PATH | cifar10-hier4:PATH | "
        "cifar100[:PATH] | navon[:SIZE] | folder:ROOT:COARSE_MAP.json",
    )
    p.add_argument("--backbone", help=f"hemisphere backbone: {' | '.join(BACKBONES)}")
    p.add_argument(
        "--loader",
        choices=["memory", "ffcv", "torch"],
        help="data.loader: memory (default; on-device tensors) | ffcv (.beton files, prepared when "
        "missing) | torch (DataLoader baseline)",
    )
    p.add_argument("--seeds", help="e.g. 0,1,2 or 0-4")
    p.add_argument(
        "--experiment",
        help="the comparison: the rows of the table; a shipped name (paper = the default, callosal) "
        "or a YAML file (bilateral/comparison.py)",
    )
    p.add_argument("--models", help="comma-separated subset of the rows (see --dry-run), default all")
    p.add_argument("--device", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument(
        "--fuse",
        type=ranged(int, 1),
        default=1,
        metavar="K",
        help="train up to K runs that differ only in seed or pool member as one fused network "
        "(grouped convolutions): fills a GPU with small models; each run keeps its own init, data "
        "order, optimiser state and checkpoints (default 1 = apart; see docs/performance.md)",
    )
    p.add_argument("--out", help="results root (default results)")
    p.add_argument("--name", help="sweep name: results/<name>/ (default <preset>-<data>-<backbone>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--analyze", action="store_true", help="after the sweep, run launch/analyze.py on it")
    p.add_argument("--status", metavar="SWEEP_DIR", help="print where a sweep stands (runs, jobs) and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. train.epochs=2")
    add_backend_arguments(p)
    return p.parse_intermixed_args(argv)


def resolve_config(args: argparse.Namespace) -> SweepConfig:
    flags = {
        "data.source": args.data,
        "data.loader": args.loader,
        "plan.backbone": args.backbone,
        "plan.experiment": args.experiment,
        "device": args.device,
        "out": args.out,
        "name": args.name,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.seeds is not None:
        overrides.append(f"plan.seeds=[{','.join(map(str, parse_seeds(args.seeds)))}]")
    if args.models is not None:
        overrides.append(f"plan.models=[{args.models}]")
    cfg = load_config(args.preset, args.config, overrides + list(args.overrides))
    if cfg.name is None:
        data_name = cfg.data.source.split(":")[0]
        cfg.name = f"{cfg.preset}-{data_name}-{cfg.plan.backbone}"
    return cfg


def preflight(cfg: SweepConfig, plan: Plan) -> None:
    """Fail before any training on what would fail every run: the data, and every architecture."""
    from bilateral.assemble import build_model
    from bilateral.data.loaders import check_loader
    from bilateral.run_data import check_batches, make_splits, run_data

    trained = [s for s in plan.runs if s.trains]
    # the runs' data: a comparison's settings may hold classes out of it
    data = run_data(trained[0].data if trained else cfg.data, cfg.data_dir)
    if trained:
        check_batches(make_splits(data, trained[0]), trained[0])  # one data and train config per sweep
        check_loader(trained[0].data.loader, data.train.images.shape[1], data.flip_invariant)
    for spec in {(s.kind, s.backbone, s.right_backbone): s for s in trained}.values():
        build_model(spec, data.num_fine, data.num_coarse)


def check_output_paths(cfg: SweepConfig, store: SweepStore) -> None:
    """Every path a sweep writes, before anything is made: a folder that is a file, or below one, is an
    error now rather than a traceback later (possibly after training, at summary.csv)."""
    move = "or move that file away"
    check_dir(cfg.out, "--out", f"give --out a folder ({move})")
    check_dir(store.root, "the sweep folder", f"choose another --name ({move})")
    check_file(
        Path(cfg.out) / "summary.csv",
        "--out's summary.csv",
        "move that directory away, or give another --out",
    )
    check_dir(cfg.data_dir, "data_dir", f"set data_dir=<a folder> ({move})")
    tracking = urlsplit(cfg.train.mlflow or "")
    if cfg.train.mlflow and tracking.scheme in ("", "file"):  # MLflow's file store
        check_dir(tracking.path, "train.mlflow's file store", f"give train.mlflow=file:<a folder> ({move})")


def check_torch_build(cluster: str, device: str) -> None:
    """Stop before anything is submitted when this machine's GPUs and torch build do not match (an old
    driver for torch's CUDA, a GPU without kernels in it): every run would fail, or with --cluster local
    and --device auto quietly train on the CPU. A login node's GPUs need not be visible to torch."""
    from bilateral import cuda_build

    if device == "cpu":
        return
    found = cuda_build.check(torch_must_see=cluster == "local")
    if found:
        raise ConfigError(f"{cuda_build.explain(found)}; or pass --device cpu")


def rows_table(plan: Plan, data_spec: str) -> str:
    """The rows of the comparison: kind, parameters (with this data's heads) and those that train,
    FLOPs per image at inference and over the run's training (bilateral.cost), and the rows each
    one's runs depend on."""
    from bilateral.cost import run_cost

    classes = class_counts(data_spec)
    by_id = {s.run_id: s for s in plan.runs}
    lines = [
        "rows:",
        f"  {'row':28} {'kind':24} {'backbone':24} {'params':>11} {'trained':>10} {'MFLOPs/img':>11} "
        f"{'train PFLOPs':>13}",
    ]
    for spec in {(s.model_name, s.backbone_name): s for s in plan.runs}.values():
        params = trained = inference = training = "-"
        if classes:
            cost = run_cost(spec, *classes, image_size_of(data_spec))
            params, trained = f"{cost.params:,}", f"{cost.trained_params:,}"
            inference = f"{cost.inference_flops / 1e6:.1f}"
            images = training_images(spec, data_spec)
            if images is not None and spec.trains:  # an ensemble's training is its members' rows
                training = f"{cost.training_flops(images) / 1e15:.3f}"
        deps = sorted({by_id[d].model_name for d in spec.depends_on})
        needs = f"  <- {', '.join(deps)}" if deps else ""
        row = f"  {spec.model_name:28} {spec.kind:24} {spec.backbone_name:24} {params:>11} {trained:>10}"
        lines.append(f"{row} {inference:>11} {training:>13}{needs}")
    return "\n".join(lines + substrates_table(plan, data_spec))


def training_images(spec: RunSpec, data_spec: str) -> int | None:
    """The images a run trains on over all its epochs (full batches only), where the data's size is
    known without decoding it."""
    size = train_size_of(data_spec)
    if size is None:
        return None
    split = size - spec.data.val_size
    if spec.data.train_subset:
        split = min(split, spec.data.train_subset)
    return split // spec.train.batch_size * spec.train.batch_size * spec.train.epochs


def substrates_table(plan: Plan, data_spec: str) -> list[str]:
    """Each backbone of the plan as a substrate: parameters, FLOPs and receptive field at this data's
    image size (bilateral.models.profile)."""
    from bilateral.models.profile import profile_backbone

    size = image_size_of(data_spec)
    lines = [f"backbones at {size}x{size} (receptive field of the last feature map, untrained):"]
    widths = {s.model.width for s in plan.runs}
    for name in sorted({b for s in plan.runs if s.trains for b in s.backbones}):
        for width in sorted(widths):
            p = profile_backbone(name, width, size)
            lines.append(
                f"  {name:16} width {width:<6g} params {p['params']:>11,}  MFLOPs {p['flops'] / 1e6:>9.1f}  "
                f"rf {p['rf_px']:>3} px  effective rf {p['rf_effective_px']:>3} px"
            )
    return lines


def required_libraries(args: argparse.Namespace, cfg: SweepConfig) -> dict[str, str]:
    """{module: what needs it} of the optional extras this command uses: checked before any training."""
    needs = {}
    library = BACKENDS[args.cluster].library
    if library:
        needs[library] = f"--cluster {args.cluster}"
    if cfg.data.loader == "ffcv":
        needs["ffcv"] = "data.loader=ffcv"
    if args.analyze:
        from bilateral.analysis import LIBRARIES

        needs.update(dict.fromkeys(LIBRARIES, "--analyze"))
    if cfg.train.mlflow:
        needs["mlflow"] = f"train.mlflow={cfg.train.mlflow}"
    if cfg.train.wandb:
        needs["wandb"] = f"train.wandb={cfg.train.wandb}"
    return needs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.status:
        from slurm.status import status

        print(status(args.status))
        return 0
    cfg = resolve_config(args)
    plan = build_plan(cfg)
    check_declared(cfg)  # a contrast naming no row fails now, not in the report after training
    store = SweepStore(Path(cfg.out) / cfg.name)
    check_output_paths(cfg, store)
    check_one_configuration(plan, store)  # runs of other settings in this folder: refused, not pooled
    if args.dry_run:
        check_dataset_spec(cfg.data.source)
        print(f"sweep {cfg.name} -> {store.root}\n{rows_table(plan, cfg.data.source)}\n{plan.describe()}")
        if args.fuse > 1:
            for number, stage in enumerate(plan.stages):
                groups = [group_name(g) for g in fusion_groups(stage, args.fuse, store)]
                print(f"stage {number} with --fuse {args.fuse}: {len(groups)} trainings: {', '.join(groups)}")
        return 0
    for module, purpose in required_libraries(args, cfg).items():
        require(module, purpose)
    check_mlflow(cfg.train.mlflow or "")  # a server that never answers: an error now, not a hang per run
    check_wandb(cfg.train.wandb or "")
    check_torch_build(args.cluster, cfg.device)
    preflight(cfg, plan)
    store.write_plan(to_dict(cfg), plan.runs)
    log.info("sweep %s: %d runs in %d stages -> %s", cfg.name, len(plan.runs), len(plan.stages), store.root)
    try:
        failed = BACKENDS[args.cluster].load().run(args, cfg, plan, store)
    except (Interrupted, KeyboardInterrupt) as exc:  # a backend's library may raise its own Ctrl-C
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(where_it_stands(signal.Signals(signum).name, plan, store), file=sys.stderr)
        return 128 + signum
    finished, damaged = store.read_records()
    failed.update({run_id: why for run_id, why in damaged.items() if run_id not in failed})
    if finished:
        write_report(store.root, copy_summary_to=Path(cfg.out) / "summary.csv")
        print(markdown(runs_table(finished), cfg.name, damaged, to_dict(cfg)))
        print(f"wrote {store.root / 'summary.csv'} and {Path(cfg.out) / 'summary.csv'}")
        if args.analyze:
            from bilateral.analysis import analyze_sweep

            print(f"wrote {analyze_sweep(store.root, device=cfg.device, data_dir=cfg.data_dir)}")
    if failed:
        print(
            f"{len(failed)} run(s) did not finish; fix what each says (most need nothing), then rerun "
            "the same command to retry only those:",
            file=sys.stderr,
        )
        for run_id, error in failed.items():
            print(f"  {run_id}: {error.strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def where_it_stands(signal_name: str, plan: Plan, store: SweepStore) -> str:
    """What a stopped sweep keeps: its finished runs, and where each unfinished one resumes."""
    finished = [s for s in plan.runs if store.run(s.run_id).is_finished()]
    started = {}
    for spec in plan.runs:
        run = store.run(spec.run_id)
        if not run.is_finished() and run.has_checkpoint("last"):
            try:
                epoch = run.checkpoint_epoch("last") + 1
                started[spec.run_id] = f"resumes after epoch {epoch}, from its checkpoints/last.pt"
            except BilateralError as exc:  # named, not raised: the stop is what the user asked for
                started[spec.run_id] = str(exc)
    lines = [
        f"stopped by {signal_name}: {len(finished)} of {len(plan.runs)} runs finished and kept in "
        f"{store.root}; {len(plan.runs) - len(finished) - len(started)} with no checkpoint yet (they "
        "start over)"
    ]
    lines += [f"  {run_id}: {where}" for run_id, where in started.items()]
    lines.append("Rerun the same command to resume: finished runs are skipped.")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """main() with logging set up, user errors printed without a traceback (exit code 2), and SIGTERM
    or Ctrl-C ending the sweep at once with what it keeps (exit code 128 + the signal's number)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    install()
    try:
        with logging_redirect_tqdm():  # on a terminal, log lines print above the bars, never through them
            return main(argv)
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # before any run started: nothing to keep
        print(f"stopped by {exc}, before training started; rerun the same command", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
