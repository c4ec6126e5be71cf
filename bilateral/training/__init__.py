"""The training wing: run(spec, store) -> record, the one function every backend executes.

lifecycle (skip, fail together, dispatch), loop (epochs and checkpoints), objective (optimiser,
schedule, loss), scoring (evaluation and checkpoint choice), checkpoints (state between epochs),
record (the finished run's predictions and record).
"""

from bilateral.training.lifecycle import EpochCallback, run, run_group

__all__ = ["EpochCallback", "run", "run_group"]
