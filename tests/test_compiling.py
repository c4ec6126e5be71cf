"""torch.compile on a cluster (bilateral/compiling.py): the inductor cache on the sweep's storage,
compile workers capped at the run's threads, and a function dynamo leaves eager at its recompile
limit recorded by name instead of a log line alone."""

import torch
from torch import nn

from bilateral import compiling
from bilateral.compiling import EagerFallbacks, compile_for_run


def test_a_function_left_eager_at_the_recompile_limit_is_recorded(monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    torch._dynamo.reset()

    def scaled(x):
        return x * 2

    compiled = torch.compile(scaled, backend="eager", dynamic=False)
    watch = EagerFallbacks().attach()
    try:
        compiled(torch.ones(2))
        assert watch.functions == []
        for n in (3, 4):  # a new shape each call: the second recompile is over the limit
            compiled(torch.ones(n))
    finally:
        watch.detach()
        torch._dynamo.reset()
    assert len(watch.functions) == 1 and "'scaled'" in watch.functions[0]


def test_compile_for_run_puts_the_cache_on_the_sweep_and_caps_compile_workers(tmp_path, monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # recorded, so that the test's value is undone
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setattr(inductor, "compile_threads", 32)
    module, watch = compile_for_run(nn.Linear(2, 2), tmp_path / "compile-cache", threads=2)
    watch.detach()
    assert compiling.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile-cache")
    assert inductor.compile_threads == 2
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/chosen/by/the/user")
    compile_for_run(nn.Linear(2, 2), tmp_path / "other", threads=64)[1].detach()
    assert compiling.os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/chosen/by/the/user"
    assert inductor.compile_threads == 2  # never raised above what was set
