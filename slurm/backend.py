"""--cluster slurm for launch/sweep.py: each stage of the plan is one submitit job array.

    python launch/sweep.py --cluster slurm --preset paper --data cifar100:/datasets \\
        --partition gpu --time 4:00:00 --gpus-per-run 1 --cpus-per-run 8 --mem-gb 32
    python launch/sweep.py --cluster slurm ... --detach        # submit everything with afterok, return
    python launch/sweep.py --status results/<sweep>            # where a (detached) sweep stands

Blocking (default): stage after stage, every unfinished run of the stage is an element of one
job array (`--runs-per-task K` puts K runs in one element, as K Slurm tasks sharing its GPUs); the
driver prints progress (queued / running / done / failed), shows the traceback of each failed run
(also in the run's error.txt) and returns {run_id: error}. Ctrl-C leaves the jobs running; the same
command run again waits for them instead of submitting them twice (jobs are remembered in
<sweep>/slurm/jobs.json, and `squeue` says which are still alive).

Detached (`--detach`): every stage is submitted at once; a run that depends on others waits for
their array elements with `--dependency=afterok:...` (and is cancelled if one fails).

Jobs are checkpointable: on USR2 (sent `--signal-delay-s` before the time limit, or on preemption)
submitit requeues the job and the run resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bilateral.config import SweepConfig
from bilateral.errors import BilateralError, ConfigError
from bilateral.flags import ranged
from bilateral.interrupt import Interrupted
from bilateral.placement import Offer, Placement, place
from bilateral.plan import Plan, RunSpec
from bilateral.store import SweepStore, write_json
from bilateral.sweep import fusion_groups, run_sweep
from slurm.nodes import node_local_paths

log = logging.getLogger("slurm")
CONTROLLER_TIMEOUT_S = 25  # the first question to the controller, before anything is submitted

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", "PREEMPTED"}
QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "PREEMPTED", "UNKNOWN", "READY"}


def _whole(value, flag: str) -> int:
    if float(value) != int(value):
        raise ConfigError(
            f"{flag} {value} on Slurm must be a whole number "
            "(to share a GPU between runs use --runs-per-task)"
        )
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of this backend (how each maps to sbatch: docs/slurm.md)."""
    parser.add_argument("--partition", help="sbatch --partition")
    parser.add_argument("--account", help="sbatch --account")
    parser.add_argument("--qos", help="sbatch --qos")
    parser.add_argument(
        "--time",
        default="240",
        help="time limit of one job: minutes or [D-]HH:MM[:SS] (sbatch --time; default 240). A run "
        "that is not done by then is requeued and resumes from its last epoch",
    )
    parser.add_argument(
        "--mem-gb",
        type=ranged(float, 0, low_open=True),
        help="memory of one run in GB (sbatch --mem); default: the cluster's",
    )
    parser.add_argument(
        "--array-parallelism",
        type=ranged(int, 1),
        default=256,
        help="at most this many elements of a job array run at once (sbatch --array=0-N%%P)",
    )
    parser.add_argument(
        "--runs-per-task",
        type=ranged(int, 1),
        default=1,
        help="K runs in one array element, as K processes sharing its GPUs (small models)",
    )
    parser.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="any other sbatch option, e.g. --sbatch constraint=a100 --sbatch exclusive (repeatable)",
    )
    parser.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line run in the job before Python, e.g. --setup 'module load cuda' (repeatable)",
    )
    parser.add_argument(
        "--signal-delay-s",
        type=ranged(int, 0),
        default=120,
        help="USR2 this long before the time limit: the job is requeued then (sbatch --signal=USR2@S)",
    )
    parser.add_argument(
        "--max-requeues", type=ranged(int, 0), default=20, help="give up on a job requeued more often"
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="submit the whole sweep (later stages with afterok dependencies) and return",
    )
    parser.add_argument(
        "--engine",
        choices=["submitit", "ray"],
        default="submitit",
        help="submitit: job arrays (default); ray: start Ray inside a Slurm allocation, run the Ray backend",
    )
    parser.add_argument(
        "--nodes",
        type=ranged(int, 1),
        default=1,
        help="--engine ray: nodes of the allocation (sbatch --nodes)",
    )
    parser.add_argument(
        "--cpus-per-node",
        type=ranged(int, 1),
        default=8,
        help="--engine ray: CPUs of each node's Ray (sbatch --cpus-per-task, one task per node; default 8)",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=ranged(int, 0),
        help="--engine ray: GPUs of each node's Ray (sbatch --gpus-per-node; default: all of a node of "
        "the partition, from sinfo; 0 with --device cpu)",
    )


def parse_minutes(text: str) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise ConfigError(f"--time {text!r}: give minutes (90) or [D-]HH:MM[:SS] (1-12:00:00)")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    if seconds <= 0:
        raise ConfigError(f"--time {text!r} must be positive")
    return -(-seconds // 60)


def parse_sbatch(items: list[str]) -> dict[str, str | bool]:
    """['constraint=a100', 'exclusive', '--mail-type=END'] -> {'constraint': 'a100', 'exclusive': True, ..}"""
    extra: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.lstrip("-").partition("=")
        if not key:
            raise ConfigError(f"--sbatch {item!r}: give KEY or KEY=VALUE, e.g. constraint=a100")
        extra[key.replace("-", "_")] = value if sep else True  # submitit's spelling: overrides its own
    return extra


def parse_sinfo(text: str, partition: str | None) -> Offer:
    """`sinfo -h -o '%P|%G|%c'` -> the GPUs and CPUs of the largest node of the partition (the
    default one, marked *, when none is named). GRES look like gpu:4, gpu:a100:4(S:0-1), gpu:2,mps:100."""
    gpus = cpus = 0.0
    seen = False
    for line in text.splitlines():
        name, _, rest = line.strip().partition("|")
        gres, _, node_cpus = rest.partition("|")
        if (
            not name
            or (partition is None and not name.endswith("*"))
            or (partition is not None and name.rstrip("*") != partition)
        ):
            continue
        seen = True
        for item in gres.split(","):
            m = re.fullmatch(r"gpu(?::[^:(]+)?:(\d+)(?:\(.*\))?", item.strip())
            if m:
                gpus = max(gpus, float(m.group(1)))
        cpus = max(cpus, float(node_cpus or 0))
    where = f"Slurm partition {partition}" if partition else "Slurm's default partition"
    if not seen:
        raise ConfigError(
            f"sinfo lists no {'partition ' + repr(partition) if partition else 'default partition'}: "
            "pass an existing one with --partition (see `sinfo -s`)"
        )
    fix = "name a GPU partition with --partition (`sinfo -s` lists them)"
    return Offer(gpus, cpus, f"{where} (sinfo)", cluster=True, no_gpu_fix=fix)


def slurm_offer(partition: str | None) -> Offer:
    _require_slurm()
    fix = (
        "Fix: start the controller, or point SLURM_CONF at the right slurm.conf (its SlurmctldHost and "
        "SlurmctldPort), and for an authentication error start munged; `scontrol ping` says whether the "
        "controller answers"
    )
    try:  # sinfo waits MessageTimeout per try, and tries again, on a controller that never answers
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%G|%c"], capture_output=True, text=True, timeout=CONTROLLER_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise BilateralError(
            f"the Slurm controller does not answer: `sinfo` got no reply within {CONTROLLER_TIMEOUT_S} s. "
            + fix
        ) from None
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise BilateralError(
            f"could not ask the Slurm controller for its partitions: `sinfo` says '{why[0]}'. {fix}"
        )
    return parse_sinfo(proc.stdout, partition)


@dataclass
class SlurmOptions:
    """The flags, checked, and what they mean for one job (one array element)."""

    device: str
    data_dir: str
    job_name: str
    time_min: int = 240
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int = 2
    workers: int = 1  # DDP processes of one run (one per GPU on GPUs)
    mem_gb: float | None = None
    array_parallelism: int = 256
    runs_per_task: int = 1
    fuse: int = 1  # runs of one fusion key trained as one network, per task (bilateral.sweep.fusion_groups)
    sbatch: dict[str, str | bool] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    signal_delay_s: int = 120
    max_requeues: int = 20
    engine: str = "submitit"  # ray: one allocation of `nodes` nodes, one task each, Ray inside
    nodes: int = 1
    cpus_per_node: int = 8
    gpus_per_node: int = 0
    placement: Placement | None = None  # what each run gets (bilateral.placement)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, cfg: SweepConfig, offer: Offer | None = None
    ) -> SlurmOptions:
        """offer: what the partition has; asked of sinfo when None and the device may be a GPU."""
        if offer is None:
            offer = Offer(0, 0, "--device cpu") if cfg.device == "cpu" else slurm_offer(args.partition)
        device, placement, gpus_per_node = cfg.device, None, 0
        if args.engine == "ray":  # --gpus-per-run / --cpus-per-run are then Ray's, per trial
            gpus, cpus, workers = 0, 1, 1
            gpus_per_node = _ray_node_gpus(cfg.device, args.gpus_per_node, offer)
        else:
            workers = args.workers_per_run
            if args.gpus_per_run is not None and args.gpus_per_run > 1 and workers == 1:
                workers = _whole(args.gpus_per_run, "--gpus-per-run")  # N GPUs: DDP over N processes
            placement = place(cfg.device, args.gpus_per_run, args.cpus_per_run, workers, offer, 2.0)
            if placement.on_gpu and args.runs_per_task > 1:  # K processes share the job's GPU
                placement = dataclasses.replace(placement, memory_fraction=1 / args.runs_per_task)
            if placement.note:
                log.warning("%s", placement.note)
            device = placement.device
            gpus, cpus = placement.gpus, placement.cpus
        opts = cls(
            device=device,
            data_dir=str(Path(cfg.data_dir).resolve()),
            job_name=f"bilateral-{cfg.name}",
            time_min=parse_minutes(args.time),
            partition=args.partition,
            account=args.account,
            qos=args.qos,
            gpus_per_run=_whole(gpus, "--gpus-per-run"),
            cpus_per_run=_whole(cpus, "--cpus-per-run"),
            workers=workers,
            mem_gb=args.mem_gb,
            array_parallelism=args.array_parallelism,
            runs_per_task=args.runs_per_task,
            fuse=args.fuse,
            sbatch=parse_sbatch(args.sbatch),
            setup=list(args.setup),
            signal_delay_s=args.signal_delay_s,
            max_requeues=args.max_requeues,
            engine=args.engine,
            nodes=args.nodes,
            cpus_per_node=args.cpus_per_node,
            gpus_per_node=gpus_per_node,
            placement=placement,
        )
        opts.check()
        return opts

    def check(self) -> None:
        for name in ("cpus_per_run", "array_parallelism", "runs_per_task", "fuse", "nodes", "cpus_per_node"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gpus_per_run < 0 or self.max_requeues < 0 or self.signal_delay_s < 0:
            raise ConfigError("--gpus-per-run, --max-requeues and --signal-delay-s cannot be negative")
        if self.distributed and self.runs_per_task > 1:
            raise ConfigError(
                f"{self.workers} DDP workers and --runs-per-task {self.runs_per_task} do not "
                "combine: pack several small runs on one GPU, or spread one run over several, not both"
            )
        if self.distributed and self.fuse > 1:
            raise ConfigError(
                f"{self.workers} DDP workers and --fuse {self.fuse} do not combine: a fused "
                "group trains in one process"
            )
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ConfigError("--mem-gb must be positive")

    @property
    def distributed(self) -> bool:
        return self.workers > 1

    @property
    def tasks_per_job(self) -> int:
        """Slurm tasks per node of one job."""
        if self.engine == "ray":
            return 1
        return self.workers if self.distributed else self.runs_per_task

    @property
    def cpus_per_task(self) -> int:
        if self.engine == "ray":
            return self.cpus_per_node
        return max(1, self.cpus_per_run // self.workers) if self.distributed else self.cpus_per_run

    @property
    def gpus_per_job(self) -> int:
        """GPUs per node of one job."""
        if self.engine == "ray":
            return self.gpus_per_node
        return self.gpus_per_run

    def parameters(self) -> dict:
        """submitit AutoExecutor parameters of one job (one array element)."""
        from slurm.task import repo_root

        setup = [f"export PYTHONPATH={repo_root()}${{PYTHONPATH:+:$PYTHONPATH}}"]
        # submitit's srun line has no --cpus-per-task, and srun of Slurm 22.05+ no longer inherits it:
        # each task would be pinned to one CPU while torch and the loaders are told to use several
        setup.append("export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK")
        if self.engine != "ray":  # Ray sets each trial's threads from its CPUs
            setup.append(f"export OMP_NUM_THREADS={self.cpus_per_task}")
        setup += self.setup
        params = {
            "name": self.job_name,
            "timeout_min": self.time_min,
            "nodes": self.nodes if self.engine == "ray" else 1,
            "tasks_per_node": self.tasks_per_job,
            "cpus_per_task": self.cpus_per_task,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_setup": setup,
        }
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.mem_gb is not None:
            runs = 1 if self.distributed or self.engine == "ray" else self.runs_per_task
            params["mem_gb"] = self.mem_gb * runs
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                params[f"slurm_{key}"] = getattr(self, key)
        if self.sbatch:
            params["slurm_additional_parameters"] = dict(self.sbatch)
        return params


def _ray_node_gpus(device: str, asked: int | None, offer: Offer) -> int:
    """--engine ray: GPUs of each node's Ray; unless asked, all a node of the partition has (the
    allocation holds whole nodes' worth, and Ray packs runs onto them)."""
    if device == "cpu" or asked == 0:
        return 0
    if device.startswith("cuda:"):
        raise ConfigError(f"--device {device}: Ray numbers each trial's GPUs from 0; pass --device cuda")
    if offer.gpus <= 0:
        asked_for = "--device auto would run Ray on CPUs only" if device == "auto" else f"--device {device}"
        raise offer.no_gpu(asked_for if asked is None else f"--gpus-per-node {asked} asks for GPUs")
    return int(offer.gpus) if asked is None else asked


def _require_slurm() -> None:
    import shutil

    missing = [c for c in ("sbatch", "squeue", "sacct", "scontrol") if shutil.which(c) is None]
    if missing:
        raise BilateralError(
            f"--cluster slurm needs the Slurm commands ({', '.join(missing)} not found): run on a login "
            "node, or start the test cluster of this machine with `sudo slurm/start-cluster.sh`"
        )


class Ledger:
    """<sweep>/slurm/jobs.json: which Slurm job (array element) holds which run, so that a rerun of the
    sweep command, or --status, finds the jobs of an earlier (detached or interrupted) invocation."""

    def __init__(self, store: SweepStore):
        self.path = store.root / "slurm" / "jobs.json"
        self.runs: dict[str, dict] = {}
        if self.path.is_file():
            self.runs = json.loads(self.path.read_text()).get("runs", {})

    def add(self, jobs: list[tuple[str, list[RunSpec]]], tasks: int) -> None:
        """Record jobs submitted together (the elements of one array): one atomic write for them all."""
        now = time.time()
        for job_id, specs in jobs:
            chunk = [s.run_id for s in specs]
            for spec in specs:
                self.runs[spec.run_id] = {"job": job_id, "tasks": tasks, "submitted": now, "chunk": chunk}
        write_json(self.path, {"runs": self.runs})

    def job_of(self, run_id: str) -> dict | None:
        return self.runs.get(run_id)


def queue_states() -> dict[str, str]:
    """{job id (array element as A_i): state} of this user's jobs still known to squeue."""
    proc = subprocess.run(
        ["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise BilateralError(f"squeue failed: {proc.stderr.strip() or proc.stdout.strip()}")
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def accounting_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} from sacct (finished jobs too); empty when accounting is unavailable."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    cmd = ["sacct", "-X", "-o", "JobID,State", "--parsable2", *[a for j in arrays for a in ("-j", j)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return {}
    return {k: v["State"] for k, v in SlurmInfoWatcher().read_info(proc.stdout).items()}


class SlurmStages:
    """A bilateral.sweep StageExecutor: one job array per call (stage), then wait and collect."""

    def __init__(self, opts: SlurmOptions, store: SweepStore, poll_s: float = 2.0):
        from slurm.task import RunTask

        self.opts, self.poll_s = opts, poll_s
        self.store = SweepStore(store.root.resolve())  # jobs may start in another directory
        self.folder = self.store.root / "slurm" / "%j"
        self.ledger = Ledger(self.store)
        self.task = RunTask(
            str(self.store.root),
            opts.device,
            opts.data_dir,
            threads=opts.cpus_per_task,
            distributed=opts.distributed,
            fuse=opts.fuse,
            placement=opts.placement,
        )
        self.stage = 0
        self.label: str | None = None

    def executor(self, **extra):
        import submitit

        ex = submitit.AutoExecutor(
            folder=self.folder, cluster="slurm", slurm_max_num_timeout=self.opts.max_requeues
        )
        params = self.opts.parameters()
        if extra:
            extra = {k.replace("-", "_"): v for k, v in extra.items()}
            params["slurm_additional_parameters"] = {**params.get("slurm_additional_parameters", {}), **extra}
        ex.update_parameters(**params)
        return ex

    def chunks(self, specs: list[RunSpec]) -> list[list[RunSpec]]:
        """One array element's specs: --runs-per-task fused groups (a group is one run without --fuse)."""
        groups = fusion_groups(specs, self.opts.fuse, self.store)
        k = self.opts.runs_per_task
        return [[s for group in groups[i : i + k] for s in group] for i in range(0, len(groups), k)]

    def submit(self, specs: list[RunSpec], **extra) -> list:
        """One job array for these specs; returns [(job, chunk)]."""
        from submitit.core.utils import FailedSubmissionError

        chunks = self.chunks(specs)
        for spec in specs:
            self.store.run(spec.run_id).retire_error()  # an error.txt after the job is then the job's
        try:
            ids = [[s.run_id for s in chunk] for chunk in chunks]
            jobs = self.executor(**extra).map_array(self.task, chunks, ids)
        except FailedSubmissionError as exc:
            hint = ""
            if "configuration is not available" in str(exc) and self.opts.gpus_per_job:
                hint = "\n(no node has the GPUs asked for: on a CPU cluster pass --device cpu)"
            raise BilateralError(f"sbatch refused the job array: {exc}{hint}") from None
        submitted = list(zip(jobs, chunks, strict=True))
        self.ledger.add([(job.job_id, chunk) for job, chunk in submitted], self.opts.tasks_per_job)
        return submitted

    def adopt(self, specs: list[RunSpec]) -> tuple[list, list[RunSpec]]:
        """Jobs of an earlier invocation still queued or running for some of these specs: wait for those
        instead of submitting the runs twice. Returns ([(job, chunk)], specs still to submit)."""
        from submitit.slurm.slurm import SlurmJob

        known = {s.run_id: self.ledger.job_of(s.run_id) for s in specs}
        if not any(known.values()):
            return [], specs
        alive = queue_states()
        adopted: dict[str, tuple] = {}
        rest = []
        for spec in specs:
            entry = known[spec.run_id]
            if entry and entry["job"] in alive:
                if entry["job"] not in adopted:
                    job = SlurmJob(
                        folder=self.folder, job_id=entry["job"], tasks=tuple(range(entry["tasks"]))
                    )
                    adopted[entry["job"]] = (job, [])
                adopted[entry["job"]][1].append(spec)
            else:
                rest.append(spec)
        if adopted:
            log.info(
                "waiting for %d run(s) already in Slurm jobs %s (submitted earlier)",
                len(specs) - len(rest),
                ", ".join(adopted),
            )
        return list(adopted.values()), rest

    def __call__(self, specs: list[RunSpec]) -> dict[str, str]:
        self.stage += 1
        jobs, rest = self.adopt(specs)
        if rest:
            submitted = self.submit(rest)
            ids = [job.job_id for job, _ in submitted]
            log.info(
                "stage %d: submitted %d run(s) as job array %s (%d element(s), %d task(s) each); logs in %s",
                self.stage,
                len(rest),
                ids[0].split("_")[0],
                len(ids),
                self.opts.tasks_per_job,
                self.folder.parent,
            )
            jobs += submitted
        return self.wait(jobs)

    def run_ray(self, args: argparse.Namespace, cfg: SweepConfig, plan: Plan, detach: bool) -> dict[str, str]:
        """--engine ray: one allocation runs the whole sweep with the Ray backend (it walks the stages)."""
        from slurm.ray_on_slurm import RayAllocation

        todo = [s for s in plan.runs if not self.store.run(s.run_id).is_finished()]
        if not todo:
            return {}
        self.label = "Ray on Slurm"
        jobs, rest = self.adopt(todo)
        if rest and not jobs:
            task = RayAllocation(self.opts.cpus_per_node, self.opts.gpus_per_job)
            job = self.executor().submit(task, args, cfg, plan, str(self.store.root))
            self.ledger.add([(job.job_id, rest)], self.opts.nodes)
            jobs.append((job, rest))
            log.info(
                "submitted Slurm job %s: Ray on %d node(s) x %d CPU(s), %d GPU(s) for %d run(s); logs in %s",
                job.job_id,
                self.opts.nodes,
                self.opts.cpus_per_node,
                self.opts.gpus_per_job,
                len(rest),
                self.folder.parent,
            )
        if detach:
            print(
                f"submitted Slurm job {jobs[0][0].job_id} (Ray inside). Follow with\n"
                f"  python launch/sweep.py --status {self.store.root}"
            )
            return {}
        return self.wait(jobs)

    def wait(self, jobs: list) -> dict[str, str]:
        from submitit.slurm.slurm import SlurmJob

        watcher = SlurmJob.watcher
        for job, _ in jobs:
            watcher.register_job(job.job_id)
        pending = dict(enumerate(jobs))
        failed: dict[str, str] = {}
        outcome: dict[int, str] = {}
        runs = [s for _, chunk in jobs for s in chunk]
        last, started = None, time.time()
        try:
            while pending:
                watcher.update()  # one sacct call for every job
                for key, (job, chunk) in list(pending.items()):
                    if watcher.is_done(job.job_id, mode="cache"):
                        errors = self.collect(job, chunk)
                        failed.update(errors)
                        outcome[key] = "failed" if errors else "done"
                        del pending[key]
                counts = collections.Counter(outcome.values())
                for job, _ in pending.values():
                    state = watcher.get_state(job.job_id, mode="cache").split()[0]
                    counts["queued" if state in QUEUED else "running"] += 1
                line = ", ".join(f"{counts[k]} {k}" for k in ("queued", "running", "done", "failed"))
                finished = sum(self.store.run(s.run_id).is_finished() for s in runs)
                line += f"; runs finished {finished}/{len(runs)}"
                if line != last:
                    log.info(
                        "%s (%d job(s)): %s", self.label or f"stage {self.stage} on Slurm", len(jobs), line
                    )
                    last = line
                if pending:
                    time.sleep(min(30.0, self.poll_s + (time.time() - started) / 60))
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C, or SIGTERM to this driver
            ids = " ".join(job.job_id for job, _ in pending.values())
            print(
                f"\ninterrupted: Slurm jobs {ids} keep running. Rerun the same command to wait for them "
                f"(nothing is submitted twice), follow them with `python launch/sweep.py --status "
                f"{self.store.root}`, or stop them with `scancel {ids}`.",
                file=sys.stderr,
            )
            raise
        return failed

    def collect(self, job, chunk: list[RunSpec]) -> dict[str, str]:
        """What became of each run of a finished job: the run directory is the truth, the job the reason."""
        reported: dict[str, str] = {}  # errors a job returned rather than raised (--engine ray)
        try:
            for result in job.results():
                reported.update({k: v for k, v in (result or {}).items() if v})
            job_error = None
        except Exception as exc:  # the runs' own tracebacks are in their error.txt
            job_error = str(exc)
        state = job.watcher.get_state(job.job_id, mode="cache")
        errors = {}
        for spec in chunk:
            run = self.store.run(spec.run_id)
            if run.is_finished():
                continue
            error_file = run.path("error.txt")
            if error_file.is_file():  # retired at submission: this job's (no clocks compared)
                text = error_file.read_text()
            elif spec.run_id in reported:
                text = reported[spec.run_id]
                run.write_error(text)
            else:  # the job died around the run (cancelled, killed, out of memory, too many requeues, ...)
                text = (
                    f"Slurm job {job.job_id} ended ({state}) without finishing this run:\n"
                    f"{job_error or 'it reported no error'}\n"
                )
                run.write_error(text)
            text += f"\n(Slurm job {job.job_id}; logs: {job.paths.stdout} and {job.paths.stderr})\n"
            errors[spec.run_id] = text
            log.error("run %s failed (Slurm job %s, %s):\n%s", spec.run_id, job.job_id, state, text)
        return errors

    def detach(self, plan: Plan) -> int:
        """Submit every unfinished run now; dependents wait with afterok on the elements they need."""
        jobs, _ = self.adopt([s for s in plan.runs if not self.store.run(s.run_id).is_finished()])
        held = {spec.run_id: job.job_id for job, chunk in jobs for spec in chunk}
        submitted = 0
        for number, stage in enumerate(plan.stages, 1):
            todo = [s for s in stage if not self.store.run(s.run_id).is_finished() and s.run_id not in held]
            groups: dict[tuple[str, ...], list[RunSpec]] = collections.defaultdict(list)
            for spec in todo:
                needs = sorted({held[d] for d in spec.depends_on if d in held})
                groups[tuple(needs)].append(spec)
            for needs, specs in groups.items():
                extra = (
                    {"dependency": "afterok:" + ":".join(needs), "kill-on-invalid-dep": "yes"}
                    if needs
                    else {}
                )
                for job, chunk in self.submit(specs, **extra):
                    held.update({s.run_id: job.job_id for s in chunk})
                    submitted += len(chunk)
                array = job.job_id.split("_")[0]
                print(
                    f"stage {number}: job array {array}: {len(specs)} run(s)"
                    + (f", after {', '.join(needs)}" if needs else "")
                )
        print(
            f"submitted {submitted} run(s) ({len(held) - submitted} already queued or running). Follow with\n"
            f"  python launch/sweep.py --status {self.store.root}\n"
            f"and when they are done build the summary with\n"
            f"  python launch/aggregate.py {self.store.root}"
        )
        return submitted


def run(args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore) -> dict[str, str]:
    """Run every unfinished run of the plan on Slurm; return {run_id: error} of those that failed."""
    opts = SlurmOptions.from_args(args, cfg)
    _require_slurm()
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)  # every job checks that its node sees it
    from slurm.task import repo_root  # submitit: imported when the backend runs, not when flags are parsed

    paths = {"--out": store.root, "data_dir": Path(cfg.data_dir), "the checkout": repo_root()}
    local = node_local_paths(paths)
    if local:
        log.warning(
            "%s: on node-local storage; compute nodes that are other machines will not see it, and their "
            "jobs stop at start naming it. Use a filesystem every node mounts at the same path",
            "; ".join(local),
        )
    if cfg.device == "cpu":  # from_args asked sinfo for any other device
        slurm_offer(args.partition)  # the controller answers, and the partition exists, before submitting
    stages = SlurmStages(opts, store)
    if args.engine == "ray":
        return stages.run_ray(args, cfg, plan, detach=args.detach)
    if args.detach:
        stages.detach(plan)
        return {}
    return run_sweep(plan, store, stages)
