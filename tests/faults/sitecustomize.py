"""Fault injection for tests/test_slurm.py, on PYTHONPATH only there: in Slurm task 1 (DDP rank 1)
the run whose id starts with $FAIL_ON_RANK1 raises as it starts training; rank 0 must not hang."""

import os

if os.environ.get("SLURM_PROCID") == "1" and os.environ.get("FAIL_ON_RANK1"):
    from bilateral.training.trainer import Trainer

    _fit = Trainer.fit

    def _failing(self):
        if self.spec.run_id.startswith(os.environ["FAIL_ON_RANK1"]):
            raise RuntimeError("injected failure on rank 1")
        return _fit(self)

    Trainer.fit = _failing
