"""What one Slurm task runs: its share of a list of RunSpecs, through bilateral.training.run.

submitit pickles a `RunTask` and the list of specs of one array element; every Slurm task of that
element (srun starts `ntasks` copies) unpickles them and calls `RunTask(specs)`:

- plain (`distributed=False`): task i of n runs specs[i::n], one after another. With
  `--runs-per-task K` the job has K tasks sharing the job's GPU(s), so K small runs train at once.
  With `--fuse F` the specs are first grouped (bilateral.sweep.fusion_groups) and task i of n trains
  groups[i::n], each group of up to F runs as one fused network.
- distributed (`distributed=True`, `--gpus-per-run N > 1`): the N tasks form one torch.distributed
  process group (from submitit's TorchDistributedEnvironment) and run the specs together.

A run is idempotent (finished runs are skipped, unfinished ones resume from checkpoints/last.pt,
written every epoch), so requeueing the same callable with the same specs is the whole checkpoint
story: `RunTask` is `Checkpointable`, and on Slurm's USR2 (time limit near, or preemption) submitit
calls `checkpoint()`, which resubmits it unchanged, and requeues the job.

A run that raises gets its traceback in its error.txt; the task still runs its other specs, then
raises `RunsFailed` so that Slurm marks the job FAILED (and `afterok` dependents do not start).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import submitit

from bilateral.placement import Placement
from bilateral.plan import RunSpec
from bilateral.store import SweepStore
from slurm.nodes import check_node_sees

log = logging.getLogger(__name__)


class RunsFailed(RuntimeError):
    """Raised at the end of a task in which at least one run failed; the message holds every traceback."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        parts = [f"{len(errors)} run(s) failed: {', '.join(errors)}"]
        parts += [f"\n=== {run_id} ===\n{text.rstrip()}" for run_id, text in errors.items()]
        super().__init__("\n".join(parts))


class RunTask(submitit.helpers.Checkpointable):
    """The callable every Slurm task executes; picklable, and resubmitted unchanged on requeue."""

    def __init__(
        self,
        store_root: str,
        device: str,
        data_dir: str,
        threads: int = 1,
        distributed: bool = False,
        fuse: int = 1,
        placement: Placement | None = None,
    ):
        self.store_root = str(store_root)
        self.device = device
        self.data_dir = str(data_dir)
        self.threads = max(1, int(threads))
        self.distributed = distributed
        self.fuse = fuse
        self.placement = placement

    def __call__(self, specs: list[RunSpec], run_ids: list[str] | None = None) -> dict[str, str | None]:
        """Run this task's share of specs; run_ids are the ids the driver gave them (checked here)."""
        import torch

        torch.set_num_threads(self.threads)  # OpenMP thrashes when it assumes every core of the node
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S", force=True
        )
        env = submitit.JobEnvironment()
        check_node_sees(self.store_root, self.data_dir, env.hostname)
        log.info(
            "job %s task %d/%d (restart %s) on %s: %s",
            env.job_id,
            env.global_rank,
            env.num_tasks,
            os.environ.get("SLURM_RESTART_COUNT", "0"),
            env.hostname,
            ", ".join(s.run_id for s in specs),
        )
        pairs = list(zip(specs, run_ids or [s.run_id for s in specs], strict=True))
        if self.distributed:
            return self._run_distributed(pairs)
        return self._run_all(self._groups(pairs)[env.global_rank :: env.num_tasks], self.device, writer=True)

    def _groups(self, pairs: list[tuple[RunSpec, str]]) -> list[list[tuple[RunSpec, str]]]:
        """The pairs in fused groups of up to self.fuse (groups of one without --fuse), in order."""
        from bilateral.sweep import fusion_groups

        by_spec = {id(spec): (spec, run_id) for spec, run_id in pairs}
        groups = fusion_groups([spec for spec, _ in pairs], self.fuse, SweepStore(self.store_root))
        return [[by_spec[id(spec)] for spec in group] for group in groups]

    def _run_all(
        self, groups: list[list[tuple[RunSpec, str]]], device: str, writer: bool
    ) -> dict[str, str | None]:
        from bilateral.sweep import run_logged

        store = SweepStore(self.store_root)
        outcome: dict[str, str | None] = {}
        for group in groups:
            specs = []
            for spec, run_id in group:
                if spec.run_id != run_id:  # it would train into another directory than the driver expects
                    outcome[run_id] = (
                        f"CodeChanged: this run's id is {spec.run_id} in the job but was {run_id} when it "
                        f"was submitted: the code under {repo_root()} changed what a RunSpec holds in "
                        "between. Rerun the sweep command so that the plan is rebuilt with the current code."
                    )
                    if writer:
                        store.run(run_id).write_error(outcome[run_id])
                    log.error("%s", outcome[run_id])
                else:
                    specs.append(spec)
            if not specs:
                continue
            errors = run_logged(specs, store, device, self.data_dir, writer, self.placement)
            outcome.update({spec.run_id: errors.get(spec.run_id) for spec in specs})
        errors = {k: v for k, v in outcome.items() if v is not None}
        if errors:
            raise RunsFailed(errors)
        return outcome

    def _run_distributed(self, pairs: list[tuple[RunSpec, str]]) -> dict[str, str | None]:
        """One process group over this job's tasks; bilateral.training.run trains across it (rank 0
        writes)."""
        import torch
        import torch.distributed as dist

        env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        device = self.device
        on_gpu = device != "cpu"  # a GPU the job cannot see fails clearly in run(), never trains on CPU
        if on_gpu and torch.cuda.is_available():
            # Slurm may expose the job's GPUs under any ids: pick by position among the visible ones
            index = env.local_rank % torch.cuda.device_count()
            torch.cuda.set_device(index)
            device = f"cuda:{index}"
        dist.init_process_group(backend="nccl" if on_gpu else "gloo", init_method="env://")
        log.info(
            "process group: rank %d/%d via %s:%s, backend %s, device %s",
            env.rank,
            env.world_size,
            env.master_addr,
            env.master_port,
            dist.get_backend(),
            device,
        )
        try:
            return self._run_all([[pair] for pair in pairs], device, writer=env.rank == 0)
        finally:
            dist.destroy_process_group()


def repo_root() -> Path:
    """The checkout: put on the job's PYTHONPATH so that `slurm.task` and `bilateral` import there."""
    return Path(__file__).resolve().parents[1]
