"""Controls for "specialisation helps": bilateral nets built like the specialised one (two frozen
backbones, the same two heads trained on top) whose hemispheres are *not* specialised. Per seed k:
  bilateral-fine-fine      two hemisphere-fine runs, frozen: seed k's and seed k+1's on one          1
                           substrate, or seed k's of two substrates (left and right backbone)
  bilateral-coarse-coarse  two hemisphere-coarse runs, frozen: seed k's and seed k+1's              1
  bilateral-random         two randomly initialised backbones, frozen (BatchNorm statistics          0
                           estimated from the training images): the floor of what heads learn

If specialised beats fine+fine and coarse+coarse, the gain comes from the two labels, not from
"two frozen nets plus a learned combiner". On one substrate the second hemisphere is the next
seed's run (seed k+1, trained for it if the sweep lacks that seed), so that rows extended with
more seeds keep their runs; neighbouring seeds of these rows then share one hemisphere run.
"""

from __future__ import annotations

from typing import ClassVar

from bilateral.kinds.bilateral_nets import Bilateral, Specialised
from bilateral.kinds.hemispheres import LEFT, RIGHT, Hemisphere
from bilateral.kinds.registry import register


class SameLabelPair(Specialised):
    """Both hemispheres trained on one label set: the specialised net without its specialisation."""

    reference = False
    hemisphere: ClassVar[Hemisphere]

    def add_runs(self, row, seed, plan):
        side = plan.left if self.hemisphere.role == "left" else plan.right
        other = plan.right if self.hemisphere.role == "left" else plan.left
        if side != other:  # two substrates: the seed's run of each
            first = plan.add(self.hemisphere.name, side, seed).run_id
            second = plan.add(self.hemisphere.name, other, seed).run_id
            return plan.add(self.name, side, seed, right_backbone=other, depends_on=(first, second))
        deps = (plan.row(self.hemisphere.name, seed).run_id, plan.row(self.hemisphere.name, seed + 1).run_id)
        return plan.add(self.name, side, seed, right_backbone=side, depends_on=deps)


class FineFine(SameLabelPair):
    name, colour, hemisphere = "bilateral-fine-fine", "tab:brown", LEFT
    how_to_get = "--experiment core --models bilateral-fine-fine"


class CoarseCoarse(SameLabelPair):
    name, colour, hemisphere = "bilateral-coarse-coarse", "tab:olive", RIGHT
    how_to_get = "--experiment core --models bilateral-coarse-coarse"


class RandomPair(Bilateral):
    """Two frozen random backbones: whatever the heads reach here needs no trained features. Their
    BatchNorm layers estimate statistics from the training batches (weights stay at their random
    initialisation), since the initial running statistics (mean 0, variance 1) fit no real input."""

    name, colour = "bilateral-random", "tab:gray"
    how_to_get = "--experiment core --models bilateral-random"

    def add_runs(self, row, seed, plan):
        return plan.add(self.name, plan.left, seed, right_backbone=plan.right)

    def prepare(self, spec, store, model):
        model.freeze_hemispheres(update_bn_stats=True)

    def trains_backbones(self, spec):
        return False


FINE_FINE = register(FineFine())
COARSE_COARSE = register(CoarseCoarse())
RANDOM_PAIR = register(RandomPair())
