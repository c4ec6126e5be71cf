"""What a sweep reads of a tuning: each row's chosen settings (cfg.tuned, from `--config tuned.yaml`).

A row is named `<model>/<backbone>` (summary.csv's model and backbone columns), so the settings a
hemisphere was tuned with reach its runs wherever they appear: as a row of their own and as the
frozen parts of a specialised net, whose heads were tuned on hemispheres trained with them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bilateral.comparison import RUN_SECTIONS
from bilateral.errors import ConfigError

if TYPE_CHECKING:
    from bilateral.config import TunedConfig
    from bilateral.plan import RunSpec


def row_key(spec: RunSpec) -> str:
    return f"{spec.model_name}/{spec.backbone_name}"


def chosen_for(tuned: TunedConfig, spec: RunSpec) -> dict[str, Any]:
    """{source, row, settings} when the tuning chose settings for this run's row, else {}."""
    settings = tuned.rows.get(row_key(spec))
    if not settings:
        return {}
    for key in settings:
        section, _, name = str(key).partition(".")
        known = {f.name for f in dataclasses.fields(RUN_SECTIONS[section])} if section in RUN_SECTIONS else ()
        if name not in known:
            raise ConfigError(
                f"tuned settings of {row_key(spec)} (from {tuned.source}) name {key!r}, which is not a key "
                "of a run's config (data, model, optim, train): fix or rewrite the file with launch/tune.py"
            )
    return {"source": tuned.source, "row": row_key(spec), "settings": dict(settings)}
