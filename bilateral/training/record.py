"""A trained (or assembled) run's end: its chosen checkpoint validated and tested once, its
predictions and its record written by rank 0."""

from __future__ import annotations

import time

import numpy as np

from bilateral.distributed import rank_and_world
from bilateral.execution import versions
from bilateral.models.profile import profile_backbone
from bilateral.plan import settings_label
from bilateral.run_data import Splits
from bilateral.store import RunStore
from bilateral.training.scoring import evaluate


def finish_run(
    spec, run_store: RunStore, model, stats: dict, data, fingerprint: str, splits: Splits, val, test, dev
) -> dict:
    """Validate and test the chosen checkpoint once; rank 0 writes the predictions and the record.
    fingerprint is the source data's (the analysis checks it), before a kind replaced any labels."""
    rank, world = rank_and_world()
    started = time.time()
    wall_s = stats.pop("wall_s")
    val_metrics, _ = evaluate(model, val, spec, dev)
    test_metrics, outputs = evaluate(model, test, spec, dev) if test is not None else ({}, {})
    relabelled = data.fingerprint() != fingerprint
    if relabelled:  # its coarse head learnt other labels (say, clusters): no coarse accuracy to compare
        val_metrics, test_metrics = (
            {k.replace("_coarse", "_relabelled"): v for k, v in m.items()}
            for m in (val_metrics, test_metrics)
        )
    labels = {"fine": data.test.fine[splits.test], "coarse": data.test.coarse[splits.test]}
    predicted = {h: z.argmax(1).numpy() for h, z in outputs.items()}
    if "fine" in predicted and data.hierarchical:  # a fine prediction implies a coarse one
        test_metrics["acc_coarse_from_fine"] = float(
            np.mean(data.fine_to_coarse[predicted["fine"]] == labels["coarse"])
        )
    record = {
        "run_id": spec.run_id,
        "model": spec.model_name,
        "base_model": spec.base_model,
        "settings": settings_label(spec.settings),  # the comparison row's own settings, if any
        "kind": spec.kind,
        "backbone": spec.backbone_name,
        "seed": spec.seed,
        "member": spec.member,
        "pairing": spec.data.pairing,  # seed: every arm of this seed saw data_seed's batches
        "data_seed": spec.data_seed if spec.trains else None,  # data order and augmentation draws
        "init_seed": spec.init_seed if spec.trains else None,  # initialisation and dropout masks
        **{f"test_{k}": v for k, v in test_metrics.items()},
        **{f"val_{k}": v for k, v in val_metrics.items()},
        **stats,
        "tuned": spec.tuned or None,  # {source, row, settings} where launch/tune.py chose its settings
        "wall_time_s": wall_s + time.time() - started,
        "workers": world,
        "data_fingerprint": fingerprint,
        "relabelled": data.name if relabelled else None,
        "labels": "hierarchical" if data.hierarchical else "independent",  # independent: no coarse-from-fine
        "image_size": data.image_size,
        "substrates": {b: profile_backbone(b, spec.model.width, data.image_size) for b in spec.backbones},
        "augment_flip": data.flip_invariant,
        "split": splits.describe(spec),
        "versions": versions(),
        "spec": spec.to_dict(),
    }
    if rank != 0:
        return record
    if test is not None:
        run_store.save_arrays(  # per-sample test outputs for the analysis
            "predictions.npz",
            {
                "test_index": splits.test,
                **{f"label_{h}": y for h, y in labels.items()},
                **{f"logits_{h}": z.numpy() for h, z in outputs.items()},
                **{f"correct_{h}": predicted[h] == labels[h] for h in predicted},
            },
        )
    run_store.write_record(record)
    return record
