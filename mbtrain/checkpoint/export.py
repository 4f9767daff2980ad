"""Export: consolidated weights as safetensors plus the model config, loadable without DeepSpeed.

`<out>/model.safetensors` holds the plain model's state dict (no `model.` prefix, float32,
full unsharded tensors); `<out>/model.json` holds the ModelConfig and the export's record
(step, source checkpoint, training data, evaluation). `load_exported` needs only torch,
safetensors and this package's model code.

An export is also a Hugging Face Hub model repo (`hub_files.py`): `config.json` (the same
ModelConfig, flat, with `model_type`, `architectures`, `auto_map`), `modeling_mbtrain.py`
for `transformers.AutoModel(..., trust_remote_code=True)`, and a model card `README.md`.
mbtrain reads model.json; a directory with config.json alone (a Hub repo uploaded without
model.json) loads from config.json's ModelConfig fields. Exports written before these files
existed load as before.

An export replaces only an earlier export: a directory whose model.json says
`"format": "mbtrain-export-1"` and that holds nothing but the export's own files. Any other
existing `--out` (a run directory, a folder of notes) is refused and left as it is. A write
that fails (a full disk) leaves no temporary directory and the previous export in place.

`load_exported` checks model.json against the weights' safetensors header (names and shapes
only, `weight_checks.py`) before it builds the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError

from mbtrain.checkpoint.hub_files import (
    CONFIG_FILE,
    HUB_FILES,
    MODEL_TYPE,
    model_values_of_hub_config,
    run_record,
    write_hub_files,
)
from mbtrain.checkpoint.weight_checks import check_weights_match, load_weights, weight_shapes
from mbtrain.config.typed import build_typed
from mbtrain.errors import CheckpointError
from mbtrain.model import ModelConfig

PREFIX = "model."
FORMAT = "mbtrain-export-1"
EXPORT_FILES = frozenset({"model.safetensors", "model.json", *HUB_FILES})
RESERVED = ("format", "model")
"""model.json's keys that are not the export's record (`export_meta`)."""


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
    """Write model.safetensors, model.json and the Hub files into out_dir (atomically, as one
    directory). `extra` is the export's record, kept in model.json and shown on the model
    card: `step`, `source`, `training` and `eval` (`hub_files.run_record`).

    A failed write (disk full, permissions) is a one-line CheckpointError; it removes the
    temporary directory and keeps an earlier export at `out_dir` as it was."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        # Write where the link points and keep the link: replacing the directory entry
        # would swap the user's symlink for a directory and leave the link behind as the
        # "old" export, which rmtree cannot remove.
        out_dir = out_dir.resolve()
    check_export_target(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    try:
        _write_files(state, model_cfg, tmp, extra)
        _swap_in(tmp, out_dir)
    except (OSError, SafetensorError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{out_dir}: writing the export failed ({reason}); any earlier export there is kept"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
    return out_dir


def _write_files(
    state: dict[str, torch.Tensor], model_cfg: Any, tmp: Path, extra: dict | None
) -> None:
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    weights = tmp / "model.safetensors"
    # Tied weights share storage; safetensors refuses shared tensors, so clone.
    save_file({k: v.clone() for k, v in state.items()}, str(weights))
    # safetensors creates its file 0600; an export is meant to be read by others (a serving
    # account, a colleague), so give it the mode any new file gets under the umask.
    os.chmod(weights, 0o666 & ~current_umask())
    record = {k: v for k, v in (extra or {}).items() if k not in RESERVED}
    meta = {"format": FORMAT, "model": dataclasses.asdict(model_cfg), **record}
    (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    write_hub_files(tmp, model_cfg, record)


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Put the finished tmp directory at out_dir; an earlier export is replaced only then."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process umask. os.umask can only read it by setting it, which would leave a moment
    in which other threads create files with another mask; Linux shows it in /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export_from_engine(
    engine: Any,
    model_cfg: Any,
    layout: Any,
    groups: Any,
    out_dir: str | Path,
    step: int | None = None,
) -> Path | None:
    """Consolidate a live engine's weights on rank 0 and write them (all ranks must call).

    An `out_dir` inside a run directory (`<run_dir>/export`, as the trainer writes it) gets
    the run's record on its model card (`hub_files.run_record`)."""
    if layout.sharded_weights:
        from mbtrain.parallel.gather import consolidated_state_dict

        state = consolidated_state_dict(engine, model_cfg, layout, groups)
    elif layout.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    path, problem, error = None, None, None
    if rank == 0:
        try:
            step = step if step is not None else getattr(engine, "global_steps", None)
            run_dir = Path(out_dir).parent
            run_dir = run_dir if (run_dir / "config.yaml").is_file() else None
            record = {"step": step, **run_record(run_dir, step)}
            path = write_export(strip_prefix(state), model_cfg, out_dir, record)
        except Exception as e:  # any failure: the other ranks must hear of it
            error = e
            problem = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
    # Every rank learns the outcome: one raising alone would leave the others in a collective
    # until the process group times out or dies with it.
    problems = [problem]
    if dist.is_initialized() and dist.get_world_size() > 1:
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)
    if problems[0]:
        if error is not None and not isinstance(error, (CheckpointError, OSError)):
            raise error  # a bug keeps its traceback on rank 0; the others get one line
        raise CheckpointError(f"export failed on rank 0: {problems[0]}")
    return path


def load_exported(
    path: str | Path,
    device: str = "cpu",
    build: Callable[[ModelConfig], torch.nn.Module] | None = None,
) -> torch.nn.Module:
    """Build the model of an export directory (or a run directory holding `export/`).

    model.json (or, without it, config.json) is checked (unknown keys, types,
    `ModelConfig.validate`) and compared with the weights' header before anything of the
    model's size is allocated. `build` makes the empty model (default `build_model`; the Hub
    classes pass their own). The export's record is the model's `export_meta` (a dict)."""
    from safetensors.torch import load_file

    from mbtrain.model import build_model

    path = Path(path)
    if not is_export_dir(path) and is_export_dir(path / "export"):
        path = path / "export"
    model_cfg, meta = read_export_config(path)
    weights = path / "model.safetensors"
    check_weights_match(model_cfg, weight_shapes(weights), path)
    check_hub_config(model_cfg, path)
    model = (build or build_model)(model_cfg)
    state = load_file(str(weights), device="cpu")
    load_weights(model, state, path)
    model.export_meta = {k: v for k, v in meta.items() if k not in RESERVED}
    return model.to(device).eval()


def is_export_dir(path: Path) -> bool:
    """Whether `path` holds an export's config (model.json, or a Hub repo's config.json)."""
    return (path / "model.json").is_file() or (path / CONFIG_FILE).is_file()


def read_export_config(path: Path) -> tuple[ModelConfig, dict]:
    """(ModelConfig, model.json's content) of an export directory: model.json when it is
    there, else config.json's ModelConfig fields (with an empty record)."""
    if (path / "model.json").is_file():
        meta_path = path / "model.json"
        meta = _read_json(meta_path)
        return _typed_model_config(meta.get("model"), meta_path), meta
    if (path / CONFIG_FILE).is_file():
        config_path = path / CONFIG_FILE
        config = _read_json(config_path)
        if config.get("model_type") != MODEL_TYPE:
            raise CheckpointError(
                f"{config_path}: model_type {config.get('model_type')!r} is not an mbtrain "
                f"model ({MODEL_TYPE!r}), and there is no model.json"
            )
        values = model_values_of_hub_config(config)
        if not values:
            raise CheckpointError(
                f"{config_path}: holds no ModelConfig fields (arch, seq_len, ...)"
            )
        return _typed_model_config(values, config_path), {}
    raise CheckpointError(f"{path}: no exported model (expected model.json and model.safetensors)")


def check_hub_config(model_cfg: ModelConfig, path: Path) -> None:
    """CheckpointError if config.json gives another ModelConfig than model.json: the Hub and
    transformers show config.json, mbtrain builds from model.json; they must not differ."""
    if not (path / "model.json").is_file() or not (path / CONFIG_FILE).is_file():
        return
    values = model_values_of_hub_config(_read_json(path / CONFIG_FILE))
    wrong = [
        f"{k}: {v!r} in {CONFIG_FILE}, {getattr(model_cfg, k)!r} in model.json"
        for k, v in values.items()
        if v != getattr(model_cfg, k)
    ]
    if wrong:
        raise CheckpointError(
            f"{path}: {CONFIG_FILE} and model.json disagree ({'; '.join(wrong[:3])}); "
            "make them equal (mbtrain builds from model.json)"
        )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def read_model_config(meta_path: Path) -> ModelConfig:
    """The valid ModelConfig of an export's model.json; one CheckpointError lists every problem."""
    meta = _read_json(meta_path)
    return _typed_model_config(meta.get("model"), meta_path)


def _typed_model_config(values: Any, where: Path) -> ModelConfig:
    if not isinstance(values, dict):
        raise CheckpointError(f'{where}: has no "model" object (the ModelConfig)')
    cfg, problems = build_typed(ModelConfig, values, {})
    if not problems:  # validate() compares values, so only once their types are right
        problems = [p.removeprefix("model.") for p in cfg.validate()]
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(f"model.{p}" for p in problems))
    return cfg
