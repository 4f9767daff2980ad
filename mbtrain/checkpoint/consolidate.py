"""Full, unsharded float32 weights from a training checkpoint, for any layout and ZeRO stage.

ZeRO 0-2 checkpoints hold the whole module in the model states file; ZeRO-3 partitions the
parameters themselves over the optimizer files, and tensor- or pipeline-parallel runs save
shards to be concatenated along their split dimension: both are read by
`shards.read_full_checkpoint`.

What `load_model` (eval, generate, `mbtrain.load_model`) reads, in this order: an export
directory (safetensors + JSON, data only); a run directory's `export/` when it is at least as
new as the run's newest checkpoint; otherwise the newest checkpoint that passes `integrity.py`;
and a path that does not exist but reads as a Hugging Face Hub id (`owner/name`, see
`hub.is_hub_id`), downloaded. Models come back as the Hub classes (`hub.MegaByte`,
`hub.ByteTransformer`): the model package's classes with `save_pretrained`/`push_to_hub`. Every
checkpoint is checked before anything in it is read, and only the files its marker lists are
opened, all as data (ZeRO-3's partitions too: `shards.read_full_checkpoint`). A
damaged newest checkpoint is skipped (one line on stderr says so) and the previous one used;
nothing is renamed, since a training job may be running in that directory.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import yaml

from mbtrain.checkpoint.export import (
    is_export_dir,
    load_exported,
    read_export_meta,
    strip_prefix,
    write_export,
)
from mbtrain.checkpoint.hub import build_hub_model, is_hub_id, load_pretrained
from mbtrain.checkpoint.hub_files import checkpoint_time, run_record
from mbtrain.checkpoint.integrity import checkpoint_problem
from mbtrain.checkpoint.paths import (
    is_complete,
    read_marker,
    resolve_checkpoint,
    resume_candidates,
    step_of_tag,
    tag_for_step,
)
from mbtrain.checkpoint.serialization import load_torch_file
from mbtrain.checkpoint.shards import listed_names, read_full_checkpoint
from mbtrain.checkpoint.weight_checks import check_weights_match, load_weights
from mbtrain.errors import CheckpointError
from mbtrain.model.config import ModelConfig
from mbtrain.parallel.layout import ParallelLayout

log = logging.getLogger(__name__)


def _checked(root: Path, tag: str, allow_pickle: bool) -> None:
    problem = checkpoint_problem(root / tag, allow_pickle=allow_pickle)
    if problem is not None:
        raise CheckpointError(f"{root / tag}: cannot be loaded: {problem.message}")


def find_checkpoint(
    path: str | Path, step: int | None = None, allow_pickle: bool = False
) -> tuple[Path, str]:
    """(root, tag) of a loadable checkpoint: the given step, the tag directory given, or the
    newest one that passes the integrity check (damaged newer ones are skipped, with a line
    on stderr)."""
    root, tag = resolve_checkpoint(path)
    if step is not None:
        tag = tag_for_step(step)
        if not (root / tag).is_dir():
            raise CheckpointError(f"{root}: no checkpoint for step {step}")
        if not is_complete(root / tag):
            raise CheckpointError(f"{root / tag}: checkpoint is incomplete")
    if step is not None or step_of_tag(Path(path).name) is not None:
        _checked(root, tag, allow_pickle)
        return root, tag
    skipped = []
    for candidate in resume_candidates(root):
        problem = checkpoint_problem(root / candidate, allow_pickle=allow_pickle)
        if problem is None:
            if skipped:
                log.warning(
                    f"skipped damaged checkpoint(s) {', '.join(skipped)}; using {candidate}"
                )
            return root, candidate
        if not problem.corrupt:
            raise CheckpointError(f"{root / candidate}: refused: {problem.message}")
        log.warning(f"{root / candidate} cannot be loaded ({problem.message})")
        skipped.append(candidate)
    raise CheckpointError(f"{root}: no loadable checkpoint ({len(skipped)} damaged)")


def checkpoint_state_dict(root: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(plain model state dict in float32, marker info) of a checked, complete checkpoint.

    Only the files the marker lists are read, all as data (`shards.read_full_checkpoint`),
    ZeRO-3's partitions included: DeepSpeed's own ZeRO-3 reader unpickles every
    `*_model_states.pt` it finds in the directory, listed or not."""
    info = read_marker(root / tag)
    saved = ParallelLayout.saved(info)
    if saved["tensor"] > 1 or saved["pipeline"] > 1 or saved["zero_stage"] == 3:
        return read_full_checkpoint(root, tag, info, model_config_of(info, root)).weights, info
    # ZeRO 0-2 keep whole parameters in the module: exactly the weights the engine computed
    # with (bf16 runs: the bf16 weights, upcast; the fp32 masters differ by rounding).
    names = listed_names(root / tag, info)
    if "mp_rank_00_model_states.pt" not in names:
        raise CheckpointError(
            f"{root / tag}: mp_rank_00_model_states.pt is not in its marker's files"
        )
    states = load_torch_file(root / tag / "mp_rank_00_model_states.pt")
    return strip_prefix(states["module"]), info


def model_config_of(info: dict, root: Path) -> ModelConfig:
    """The model config a checkpoint was saved with: its marker's `model` section, or (older
    checkpoints) the `model:` section of the run's resolved config.yaml."""
    model = info.get("model")
    if model is None:
        cfg_path = root.parent / "config.yaml"
        try:
            model = (yaml.safe_load(cfg_path.read_text()) or {}).get("model")
        except (OSError, yaml.YAMLError, AttributeError):
            model = None
        if not isinstance(model, dict):
            raise CheckpointError(f"{root}: no model config in the checkpoint or in {cfg_path}")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in model.items() if k in names})


def _export_is_current(run_dir: Path) -> bool:
    """Whether `run_dir/export` holds weights at least as new as the newest checkpoint."""
    meta = read_export_meta(run_dir / "export")
    if meta is None:
        return False
    candidates = resume_candidates(run_dir / "checkpoints")
    if not candidates:
        return True
    newest = step_of_tag(candidates[0]) or 0
    return isinstance(meta.get("step"), int) and meta["step"] >= newest


def load_model(path: str | Path, step: int | None = None, device: str = "cpu") -> torch.nn.Module:
    """A ready-to-use model from an export dir, a run dir, a checkpoint dir or a Hugging Face
    Hub id (CPU or GPU), as `hub.MegaByte` / `hub.ByteTransformer`.

    A run's safetensors export is preferred whenever it is current (see module docstring)."""
    if is_hub_id(path):
        if step is not None:
            raise CheckpointError(f"{path}: a Hub id has no checkpoint steps (drop --step)")
        return load_pretrained(str(path), device)
    path = Path(path)
    if is_export_dir(path):
        return load_exported(path, device, build=build_hub_model)
    if step is None and _export_is_current(path):
        return load_exported(path / "export", device, build=build_hub_model)
    root, tag = find_checkpoint(path, step)
    state, info = checkpoint_state_dict(root, tag)
    cfg = model_config_of(info, root)
    # The marker's sizes against the weights read, before anything is allocated for them.
    check_weights_match(cfg, {k: tuple(v.shape) for k, v in state.items()}, root / tag)
    model = build_hub_model(cfg)
    load_weights(model, state, root / tag)
    return model.to(device).eval()


def export_checkpoint(path: str | Path, out: str | Path, step: int | None = None) -> Path:
    """`mbtrain export`: consolidated safetensors, model.json and the Hub files (config.json,
    modeling file, model card) from any layout's checkpoint. The card records the run's
    training data and, when the newest checkpoint is exported, `<run_dir>/eval.json` if it is
    newer than that checkpoint."""
    root, tag = find_checkpoint(path, step)
    state, info = checkpoint_state_dict(root, tag)
    cfg = model_config_of(info, root)
    run_dir = root.parent if (root.parent / "config.yaml").is_file() else None
    candidates = resume_candidates(root)
    newest = bool(candidates) and candidates[0] == tag
    record = run_record(
        run_dir, info.get("step"), info, checkpoint_time(root / tag), evaluated=newest
    )
    extra = {"step": info.get("step"), "source": str(root / tag), **record}
    return write_export(state, cfg, out, extra)
