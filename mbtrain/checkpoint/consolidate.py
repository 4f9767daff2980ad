"""Full, unsharded float32 weights from a training checkpoint, for any ZeRO stage.

ZeRO 0-2 checkpoints hold the whole module in the model states file; ZeRO-3 partitions the
parameters themselves, and DeepSpeed's `zero_to_fp32` gathers them from the optimizer
partitions. Checkpoints of tensor- or pipeline-parallel runs are merged by
`mbtrain.parallel` (their shards must be concatenated along the split dimension).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mbtrain.checkpoint.export import strip_prefix
from mbtrain.checkpoint.layout import is_complete, read_marker, resolve_checkpoint, tag_for_step
from mbtrain.errors import CheckpointError


def find_checkpoint(path: str | Path, step: int | None = None) -> tuple[Path, str]:
    root, tag = resolve_checkpoint(path)
    if step is not None:
        tag = tag_for_step(step)
        if not (root / tag).is_dir():
            raise CheckpointError(f"{root}: no checkpoint for step {step}")
        if not is_complete(root / tag):
            raise CheckpointError(f"{root / tag}: checkpoint is incomplete")
    return root, tag


def checkpoint_state_dict(root: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(plain model state dict in float32, marker info) of a complete checkpoint."""
    info = read_marker(root / tag)
    if info.get("tensor", 1) > 1 or info.get("pipeline", 1) > 1:
        from mbtrain.parallel.consolidate import merge_parallel_checkpoint

        return merge_parallel_checkpoint(root, tag, info), info
    if info.get("zero_stage", 0) < 3:
        # ZeRO 0-2 keep whole parameters in the module: exactly the weights the engine computed
        # with (bf16 runs: the bf16 weights, upcast; the fp32 masters differ by rounding).
        states = torch.load(
            root / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return strip_prefix(states["module"]), info
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    return strip_prefix(state), info


def model_config_of(info: dict, root: Path):
    from mbtrain.model import ModelConfig

    model = info.get("model")
    if model is None:  # fall back to the run's resolved config
        cfg_path = root.parent / "config.yaml"
        if not cfg_path.is_file():
            raise CheckpointError(f"{root}: no model config in the checkpoint or the run directory")
        from mbtrain.config import load_config

        return load_config(cfg_path).model
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in model.items() if k in names})


def load_model(path: str | Path, step: int | None = None, device: str = "cpu") -> torch.nn.Module:
    """A ready-to-use model from an export dir, a run dir or a checkpoint dir (CPU or GPU)."""
    from mbtrain.checkpoint.export import load_exported, load_weights
    from mbtrain.model import build_model

    path = Path(path)
    if (path / "model.json").is_file():
        return load_exported(path, device)
    try:
        root, tag = find_checkpoint(path, step)
    except CheckpointError:
        if step is None and (path / "export" / "model.json").is_file():
            return load_exported(path / "export", device)
        raise
    state, info = checkpoint_state_dict(root, tag)
    cfg = model_config_of(info, root)
    model = build_model(cfg)
    load_weights(model, state, root / tag)
    return model.to(device).eval()


def export_checkpoint(path: str | Path, out: str | Path, step: int | None = None) -> Path:
    """`mbtrain export`: consolidated safetensors + model.json from any layout's checkpoint."""
    from mbtrain.checkpoint.export import write_export

    root, tag = find_checkpoint(path, step)
    state, info = checkpoint_state_dict(root, tag)
    cfg = model_config_of(info, root)
    return write_export(state, cfg, out, {"step": info.get("step"), "source": str(root / tag)})
