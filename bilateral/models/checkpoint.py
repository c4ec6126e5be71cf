"""Parameter counting and strict checkpoint loading (a mismatch is an error, never a partial load)."""

from collections.abc import Mapping

from torch import Tensor, nn

from bilateral.errors import CheckpointError

_SHOWN = 3  # offending keys quoted per kind of mismatch


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def load_state_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load `state_dict` into `module`; raise CheckpointError naming `source` if any key or shape differs."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        f"{len(items)} {kind} ({', '.join(items[:_SHOWN])}{', ...' if len(items) > _SHOWN else ''})"
        for kind, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(module).__name__}: {'; '.join(problems)}. "
            "It was saved by a different architecture or width. Fix: delete that run's directory "
            "to retrain it, or load it with the spec/config that produced it."
        )
    module.load_state_dict(state_dict, strict=True)
