"""The module DeepSpeed wraps: the model plus its loss.

DeepSpeed's engine calls `forward`, and its hooks (ZeRO-3 parameter gathering, bf16 casts)
attach there, so the loss must be computed inside a forward, not by calling `model.loss`
on the side. State-dict keys gain a `model.` prefix, which export strips.
"""

from __future__ import annotations

import torch
from torch import nn


class LossModule(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model.loss(x, mask, segments)
