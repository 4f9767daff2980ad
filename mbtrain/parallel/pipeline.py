"""Pipeline stages over the global blocks: a DeepSpeed `PipelineModule`.

Layers, in order: the embedding (first stage), one layer per global block, the head (last
stage: final global norm, global-to-local projection, local model, output head). The loss
needs the input bytes and the mask, so the batch is `(x, (x, mask))`: the first stage
reads x as input, the last reads (x, mask) as labels, and `loss_fn` calls the head layer's
`loss`. Blocks are balanced over stages (`partition_method="type:Block"`); check_layout
requires the layer count to divide evenly.

The layers are the modules of the model already built from the seed (and tensor-sharded),
not LayerSpecs: every stage must start from exactly the weights a single process would
build, so every rank builds the full model once and the PipelineModule keeps its stage's
layers. (For models too large to build whole on one rank this would become LayerSpecs
with seeded init; not needed at the sizes trained here.)

Activation checkpointing stays in `Block` (`model.activation_checkpointing`); DeepSpeed's
`activation_checkpoint_interval` is left at 0, because with it DeepSpeed would also try to
checkpoint the embedding and head layers unless `checkpointable_layers` is given.

Parameter names inside the pipeline are `<layer index>.<name>`; `plain_name` maps them to
the plain model's names, for export, consolidation and resharding.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor, nn

# The model attributes each end layer owns (a parameter may only live on one stage).
_FIRST = {
    "megabyte": ("global_embed", "global_pos", "global_pad", "dropout"),
    "transformer": ("embed", "pos", "start", "dropout"),
}
_LAST = {
    "megabyte": ("global_to_local", "local_embed", "local_pad", "local_model", "head", "dropout"),
    "transformer": ("head",),
}
FINAL_NORM = "final_norm"


def _adopt(layer: nn.Module, model: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(model, name, None)
        if value is None:
            continue
        if isinstance(value, nn.Parameter):
            layer.register_parameter(name, value)
        else:
            layer.add_module(name, value)


class EmbedLayer(nn.Module):
    """First stage: byte ids (B, T) -> global model input (B, K, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: owns only its parts
        _adopt(self, model, _FIRST[model.cfg.arch])

    def forward(self, x: Tensor) -> Tensor:
        return self._model.embed_global(x)


class HeadLayer(nn.Module):
    """Last stage: passes the global output on; `loss` runs the local model and the head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)
        self.add_module(FINAL_NORM, model.global_model.norm)
        _adopt(self, model, _LAST[model.cfg.arch])

    def forward(self, h: Tensor) -> Tensor:
        return h

    def loss(self, h: Tensor, x: Tensor, mask: Tensor | None) -> Tensor:
        return self._model.local_head(h, x, mask)


class _LossFn:
    """Picklable `loss_fn(outputs, labels)`; not an nn.Module, so no stage registers it."""

    def __init__(self, head: HeadLayer) -> None:
        self.head = head

    def __call__(self, h: Tensor, labels: tuple[Tensor, Tensor]) -> Tensor:
        x, mask = labels
        return self.head.loss(h, x, mask)


def build_pipeline_module(model: nn.Module, topology: Any) -> nn.Module:
    """A PipelineModule over `model` (already tensor-sharded) for the given topology."""
    from deepspeed.pipe import PipelineModule

    from mbtrain.errors import ConfigError

    if model.cfg.arch == "transformer" and model.cfg.tie_local_embedding:
        raise ConfigError(
            "model.tie_local_embedding: the baseline ties its embedding (first stage) to its "
            "head (last stage), which a pipeline cannot share; set it false with parallel.pipeline > 1"
        )
    head = HeadLayer(model)
    layers = [EmbedLayer(model), *model.global_model.blocks, head]
    return PipelineModule(
        layers=layers,
        topology=topology,
        loss_fn=_LossFn(head),
        partition_method="type:Block",
        activation_checkpoint_interval=0,
    )


_PIPE_NAME = re.compile(r"^(\d+)\.(.+)$")


def plain_name(name: str, n_blocks: int) -> str:
    """Plain-model name of PipelineModule parameter `name` (layer 0 embed, 1..n blocks, n+1 head)."""
    m = _PIPE_NAME.match(name)
    if not m:
        raise ValueError(f"not a pipeline parameter name: {name}")
    idx, rest = int(m.group(1)), m.group(2)
    if 1 <= idx <= n_blocks:
        return f"global_model.blocks.{idx - 1}.{rest}"
    if idx == n_blocks + 1 and rest.startswith(FINAL_NORM + "."):
        return "global_model.norm." + rest[len(FINAL_NORM) + 1 :]
    return rest


def plain_param_name(name: str, pipeline: bool, n_blocks: int) -> str:
    """The plain model's name of an engine parameter: PipelineModule names are mapped back
    (`plain_name`), the `model.` prefix of the LossModule is dropped."""
    if pipeline:
        return plain_name(name, n_blocks)
    return name.removeprefix("model.")


def stage_of_layer(layer_idx: int, n_blocks: int, stages: int) -> int:
    """Stage holding layer `layer_idx` with blocks balanced evenly (as type:Block does)."""
    if layer_idx == 0:
        return 0
    if layer_idx > n_blocks:
        return stages - 1
    return (layer_idx - 1) // (n_blocks // stages)
