"""An export's weights against its model config, from the safetensors header alone.

`load_exported` checks model.json against the weights' names and shapes before it builds the
model: a hand-edited `global_layers: 100000` would otherwise allocate tens of GB before the
weights could say it is wrong. Then `load_weights` loads them strictly, one line per mismatch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from mbtrain.errors import CheckpointError
from mbtrain.model import ModelConfig


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a safetensors file, from its header (no tensor data)."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (an export holds model.json and this file)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None


def _blocks(shapes: dict[str, tuple[int, ...]], stack: str) -> int:
    """Blocks of `stack` (`global_model`, `local_model`): weights are named stack.blocks.N.*"""
    prefix = f"{stack}.blocks."
    ids = {k[len(prefix) :].split(".")[0] for k in shapes if k.startswith(prefix)}
    return max((int(i) + 1 for i in ids if i.isdigit()), default=0)


def _axis(shapes: dict[str, tuple[int, ...]], name: str, axis: int) -> int | None:
    shape = shapes.get(name)
    return shape[axis] if shape is not None and len(shape) > axis else None


def sizes_of_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The ModelConfig fields that weight names and shapes fix (see megabyte.py, baseline.py).

    Heads, mlp_ratio, norm and activation leave no trace of their own in the names or leave
    one only in the parameter count, which `check_weights_match` compares as well."""
    if "global_embed.weight" in shapes:  # MegaByte: global_embed (256, D_G), global_pad (P*D_G)
        d_g = _axis(shapes, "global_embed.weight", 1)
        sizes: dict[str, Any] = {
            "arch": "megabyte",
            "global_dim": d_g,
            "global_layers": _blocks(shapes, "global_model"),
            "local_dim": _axis(shapes, "local_embed.weight", 1),
            "local_layers": _blocks(shapes, "local_model"),
        }
        width = _axis(shapes, "global_pad", 0)
        if d_g and width is not None:
            sizes["patch_size"] = width // d_g
        pos = "global_pos.weight"
    elif "embed.weight" in shapes:  # the baseline: embed (256, D), start (D)
        sizes = {
            "arch": "transformer",
            "dim": _axis(shapes, "embed.weight", 1),
            "layers": _blocks(shapes, "global_model"),
        }
        pos = "pos.weight"
    else:
        return {}
    # Learned positions are a (seq_len, D) table; rope has no position weights at all.
    sizes["pos"] = "learned" if pos in shapes else "rope"
    if pos in shapes:
        sizes["seq_len"] = _axis(shapes, pos, 0)
    return sizes


def check_weights_match(
    model_cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], where: Path
) -> None:
    """CheckpointError unless the weights' names and shapes are those `model_cfg` builds.

    Cheap (header only), so it runs before `build_model` allocates anything."""
    from mbtrain.model import count_parameters

    held = sizes_of_weights(shapes)
    if not held:
        raise CheckpointError(
            f"{where}: weights do not match the model config (no global_embed.weight or "
            "embed.weight: not an mbtrain model's weights)"
        )
    keys = ["arch"] if held["arch"] != model_cfg.arch else list(held)
    if model_cfg.pos != "learned" or held["pos"] != "learned":
        keys = [k for k in keys if k != "seq_len"]  # rope weights do not fix seq_len
    wrong = [
        f"model.json says {k}={getattr(model_cfg, k)!r}, the weights hold {held[k]!r}"
        for k in keys
        if getattr(model_cfg, k) != held[k]
    ]
    if wrong:
        raise CheckpointError(
            f"{where}: weights do not match the model config ({'; '.join(wrong)})"
        )
    # The file always holds head.weight, tied or not (state_dict lists both names).
    expected = count_parameters(dataclasses.replace(model_cfg, tie_local_embedding=False))
    total = sum(_numel(s) for s in shapes.values())
    if total != expected:
        raise CheckpointError(
            f"{where}: weights do not match the model config (model.json gives "
            f"{expected:,} parameters, the weights hold {total:,}: check mlp_ratio, "
            "activation and norm)"
        )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load a full state dict; a mismatch (another architecture or size) is one clear error."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e))
        raise CheckpointError(f"{where}: weights do not match the model config ({first})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not match the model config "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
