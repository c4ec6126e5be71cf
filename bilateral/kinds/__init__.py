"""Model kinds as plug-ins (bilateral.kinds.registry). The paper's kinds are declared in the
modules below and registered in plan order. Per seed:                        stage
  hemisphere-fine        left hemisphere, fine labels only       0   (hemispheres.py)
  hemisphere-coarse      right hemisphere, coarse labels only    0
  bilateral-specialised  frozen hemispheres, heads trained        1   <- both hemispheres (bilateral_nets.py)
  bilateral-unspecialised  both hemispheres + heads, end to end  0
  unilateral             one backbone, fine + coarse heads       0   (baselines.py; member 0 of the pool)
  unilateral-resnet18/34 CIFAR ResNets with both heads           0
  pool member 1..P-1     more unilateral runs, other inits        0
  ensemble-topK          mean logits of the K best pool members   1   <- the pool (chosen on validation)
  bilateral-fine-fine, -coarse-coarse, -random: controls            1   (controls.py)
"""

import importlib

from bilateral.kinds.registry import Kind, Role, all_kinds, kind_of, load_kind_modules, register, with_role

_MODULES = ("hemispheres", "bilateral_nets", "baselines", "controls", "callosal", "unsupervised")
for _module in _MODULES:  # plan order
    importlib.import_module(f"bilateral.kinds.{_module}")

__all__ = ["Kind", "Role", "all_kinds", "kind_of", "load_kind_modules", "register", "with_role"]
