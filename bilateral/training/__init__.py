"""The training wing: run(spec, store) -> record, the one function every backend executes.

lifecycle (skip, fail together, dispatch), trainer (the loop in named phases), objective (optimiser,
schedule, loss), scoring (evaluation and checkpoint choice), checkpoints (state between epochs),
record (the finished run's predictions and record).
"""

from bilateral.training.lifecycle import EpochCallback, run, run_group

__all__ = ["EpochCallback", "run", "run_group"]
