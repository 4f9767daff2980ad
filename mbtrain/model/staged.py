"""What MegaByte and the baseline share: a model in three stages.

`embed_global` -> the global blocks -> `local_head` / `local_logits`. Pipeline parallelism
cuts the model along exactly these stages, so both architectures expose them, and the whole
model is only their composition.
"""

from __future__ import annotations

from torch import Tensor, nn


class StagedModel(nn.Module):
    """Composition of the stages; subclasses define them and `global_model.blocks`."""

    def embed_global(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def local_logits(self, h_global: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def local_head(self, h_global: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def run_global(self, x: Tensor) -> Tensor:
        h = self.embed_global(x)
        for block in self.global_model.blocks:
            h = block(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Next-byte logits (B, T, 256); logits[:, t] depends only on x[:, :t]."""
        return self.local_logits(self.run_global(x), x)

    def loss(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean next-byte cross-entropy in nats over positions where mask (B, T) is True."""
        return self.local_head(self.run_global(x), x, mask)
