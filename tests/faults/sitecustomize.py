"""Fault injection for tests/test_slurm.py, on PYTHONPATH only there: in Slurm task 1 (DDP rank 1)
the run whose id starts with $FAIL_ON_RANK1 raises as it starts training; rank 0 must not hang."""

import os

if os.environ.get("SLURM_PROCID") == "1" and os.environ.get("FAIL_ON_RANK1"):
    import bilateral.training.loop as loop

    _train = loop.train_members

    def _failing(specs, *args, **kwargs):
        if specs[0].run_id.startswith(os.environ["FAIL_ON_RANK1"]):
            raise RuntimeError("injected failure on rank 1")
        return _train(specs, *args, **kwargs)

    loop.train_members = _failing
