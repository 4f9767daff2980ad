"""Export: consolidated weights as safetensors plus the model config, loadable without DeepSpeed.

`<out>/model.safetensors` holds the plain model's state dict (no `model.` prefix, float32,
full unsharded tensors); `<out>/model.json` holds the ModelConfig. `load_exported` needs
only torch, safetensors and this package's model code.

An export replaces only an earlier export: a directory whose model.json says
`"format": "mbtrain-export-1"` and that holds nothing but the export's own files. Any other
existing `--out` (a run directory, a folder of notes) is refused and left as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mbtrain.errors import CheckpointError

PREFIX = "model."
FORMAT = "mbtrain-export-1"
EXPORT_FILES = frozenset({"model.safetensors", "model.json"})


def read_export_meta(path: str | Path) -> dict | None:
    """model.json of an mbtrain export directory, or None if `path` is not one."""
    try:
        meta = json.loads((Path(path) / "model.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def check_export_target(out_dir: str | Path) -> None:
    """CheckpointError unless `out_dir` is absent, empty, or an earlier export only."""
    out_dir = Path(out_dir)
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists() and not parent.is_dir():
            raise CheckpointError(f"{out_dir}: {parent} is a file, not a directory")
        if parent.exists():
            break
    if not out_dir.exists():
        return
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
    if read_export_meta(out_dir) is None and (others or any(out_dir.iterdir())):
        raise CheckpointError(
            f"{out_dir}: exists and is not an mbtrain export; refusing to replace it "
            "(give --out a new or empty directory, or an earlier export)"
        )
    if others:
        raise CheckpointError(
            f"{out_dir}: an earlier export, but it also holds {', '.join(others[:5])}; "
            "refusing to replace it (move those files, or give another --out)"
        )


def strip_prefix(state: dict) -> dict[str, torch.Tensor]:
    """The plain model's state dict: no `model.` prefix, float32 on CPU, tensors only."""
    out = {}
    for k, v in state.items():
        if not torch.is_tensor(v):
            continue
        k = k[len(PREFIX) :] if k.startswith(PREFIX) else k
        out[k] = v.detach().to("cpu", torch.float32).contiguous()
    return out


def write_export(
    state: dict[str, torch.Tensor], model_cfg: Any, out_dir: str | Path, extra: dict | None = None
) -> Path:
    """Write model.safetensors + model.json into out_dir (atomically, as one directory)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    check_export_target(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # Tied weights share storage; safetensors refuses shared tensors, so clone.
    save_file({k: v.clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
    meta = {"format": FORMAT, "model": dataclasses.asdict(model_cfg), **(extra or {})}
    (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        import shutil

        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def export_from_engine(
    engine: Any,
    model_cfg: Any,
    layout: Any,
    groups: Any,
    out_dir: str | Path,
    step: int | None = None,
) -> Path | None:
    """Consolidate a live engine's weights on rank 0 and write them (all ranks must call)."""
    if layout.sharded_weights:
        from mbtrain.parallel.gather import consolidated_state_dict

        state = consolidated_state_dict(engine, model_cfg, layout, groups)
    elif layout.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    path, problem = None, None
    if rank == 0:
        try:
            path = write_export(
                strip_prefix(state),
                model_cfg,
                out_dir,
                {"step": step if step is not None else getattr(engine, "global_steps", None)},
            )
        except (CheckpointError, OSError) as e:
            problem = str(e)
    # Every rank learns the outcome: one raising alone would leave the others in a barrier.
    problems = [problem]
    if dist.is_initialized() and dist.get_world_size() > 1:
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)
    if problems[0]:
        raise CheckpointError(f"export failed: {problems[0]}")
    return path


def load_exported(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Build the model of an export directory (or a run directory holding `export/`)."""
    from safetensors.torch import load_file

    from mbtrain.model import ModelConfig, build_model

    path = Path(path)
    if (path / "export" / "model.json").is_file():
        path = path / "export"
    meta_path = path / "model.json"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path}: no exported model (expected model.json and model.safetensors)"
        )
    meta = json.loads(meta_path.read_text())
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model_cfg = ModelConfig(**{k: v for k, v in meta["model"].items() if k in fields})
    model = build_model(model_cfg)
    state = load_file(str(path / "model.safetensors"), device="cpu")
    load_weights(model, state, path)
    return model.to(device).eval()


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
