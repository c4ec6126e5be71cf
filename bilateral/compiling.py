"""torch.compile for one run, as a cluster needs it.

Fresh Ray actors and Slurm jobs each compile again, so the inductor cache lives on the sweep's
storage (`<sweep>/compile-cache`, unless TORCHINDUCTOR_CACHE_DIR is set) where every process of the
sweep finds it; compile workers are capped at the run's threads (inductor would start up to 32 per
process, however few CPUs the run was given); dynamo's caches are reset per run, so one process
training many kinds does not reach the recompile limit on earlier runs' code; and a function that
does reach it, which dynamo then runs eagerly with only a log line, is recorded by name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

LIMIT_MESSAGE = "torch._dynamo hit config."  # dynamo's warning as it gives a function up to eager


class EagerFallbacks(logging.Handler):
    """The functions dynamo gave up compiling (recompile limit) while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.functions: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(LIMIT_MESSAGE):
            function = record.args[2] if isinstance(record.args, tuple) and len(record.args) > 2 else "?"
            self.functions.append(str(function))

    def attach(self) -> EagerFallbacks:
        logging.getLogger("torch._dynamo.convert_frame").addHandler(self)
        return self

    def detach(self) -> None:
        logging.getLogger("torch._dynamo.convert_frame").removeHandler(self)


def compile_for_run(module: nn.Module, cache_dir: Path, threads: int) -> tuple[nn.Module, EagerFallbacks]:
    """(the compiled module, its fallbacks watcher: detach it when the run ends)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    import torch._dynamo
    import torch._inductor.config as inductor

    inductor.compile_threads = max(1, min(inductor.compile_threads, threads))
    torch._dynamo.reset()
    return torch.compile(module), EagerFallbacks().attach()
