"""What a run's arithmetic really is on its device, for its record.

"fp32" on an Ampere or newer GPU is not IEEE fp32 throughout: PyTorch lets cuDNN run fp32
convolutions in TF32 (10-bit mantissa) by default, and matmuls too when
torch.backends.cuda.matmul.allow_tf32 is set. A record that says fp32 must say which.
"""

from __future__ import annotations

import torch


def tf32_state(dev: torch.device) -> dict[str, bool] | None:
    """{conv, matmul}: whether fp32 convolutions and matmuls of this run compute in TF32 (GPUs of
    compute capability 8.0 and newer, as torch.backends is set); None on a CPU, which has no TF32."""
    if dev.type != "cuda":
        return None
    ampere = torch.cuda.get_device_capability(dev)[0] >= 8
    return {
        "conv": ampere and torch.backends.cudnn.allow_tf32,
        "matmul": ampere and torch.backends.cuda.matmul.allow_tf32,
    }
