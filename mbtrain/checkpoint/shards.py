"""Reading a checkpoint's files, whatever layout wrote them, into one layout-free form.

Checkpoint files, as DeepSpeed writes them:
* without a pipeline: `mp_rank_<tp>_model_states.pt` (key `module`, `model.`-prefixed);
* with a pipeline: `layer_<idx>-model_<tp>-model_states.pt` per layer (PipelineModule
  layer-local names; `pipeline.plain_name` maps them back);
* with ZeRO-1/2: `zero_pp_rank_<dp>_mp_rank_<mp>_optim_states.pt` hold the fp32 master
  weights and Adam moments as flat partitions, addressed by `param_slice_mappings`
  (name -> offset, numel in this data-parallel rank's partition); these are exact also
  for bf16 runs, so the fp32 masters are preferred over the module copies when present;
* with ZeRO-3 the module files hold empty parameters: `zero_pp_rank_<r>_mp_rank_<mp>_
  model_states.pt` give the parameter shapes in partition order (`param_shapes`), and each
  of the R ranks of the partition group holds ceil(numel / R) elements of every parameter,
  back to back, in its `fp32_flat_groups` (the Adam moments alike, per sub-group): the
  layout DeepSpeed's `zero_to_fp32` reads, read here with the rest, as data only.

Only the files the checkpoint's marker lists are opened (`listed_names`): a file dropped into
a checkpoint directory afterwards is never read, whatever its name.

`read_full_checkpoint` gives full float32 weights and Adam moments keyed by the plain model's
names (sharded tensors concatenated along their split dimension, `tensor.merge_shards`): what
export, `load_model` and resharding (`reshard.py`) need. Every file goes through
`serialization.load_torch_file` (data only). The parameter names stored with a ZeRO-0
optimizer (`name_param_groups`) and DeepSpeed's `universal_checkpoint_info` are written here too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mbtrain.checkpoint.serialization import load_torch_file
from mbtrain.model.config import ModelConfig
from mbtrain.parallel.pipeline import plain_param_name
from mbtrain.parallel.tensor import merge_shards


@dataclass
class FullCheckpoint:
    """A checkpoint's state, independent of the layout it was saved with."""

    weights: dict[str, torch.Tensor]
    """Plain name -> full float32 tensor (tied weights under each of their names)."""
    optim: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Plain name -> {"exp_avg", "exp_avg_sq"} full float32 tensors (empty if unavailable)."""
    step: int = 0
    """Adam step count."""
    states: dict[str, Any] = field(default_factory=dict)
    """The first model-states file (global_steps, lr_scheduler, client state)."""


_MP_FILE = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
_LAYER_FILE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
_OPTIM_FILE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
_Z3_STATES_FILE = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")


def listed_names(ckpt: Path, info: dict) -> list[str]:
    """The file names of checkpoint `ckpt` that its marker lists (every file of a checkpoint
    written before markers listed them), sorted."""
    files = info.get("files")
    if isinstance(files, dict):
        return sorted(files)
    return sorted(p.name for p in ckpt.iterdir() if p.is_file())


def _load(path: Path, allow_pickle: bool = False) -> Any:
    return load_torch_file(path, allow_pickle=allow_pickle)


def _module_shards(
    ckpt: Path, names: list[str], pipeline: int, n_blocks: int, allow_pickle: bool = False
) -> dict[str, dict[int, torch.Tensor]]:
    """Plain name -> {tp rank: tensor} from the module-state files."""
    shards: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    for f in (ckpt / name for name in names):
        if pipeline > 1:
            m = _LAYER_FILE.match(f.name)
            if not m:
                continue
            idx, tp = int(m.group(1)), int(m.group(2))
            for k, v in _load(f, allow_pickle).items():
                if torch.is_tensor(v):
                    shards[plain_param_name(f"{idx}.{k}", True, n_blocks)][tp] = v.float()
        else:
            m = _MP_FILE.match(f.name)
            if not m:
                continue
            tp = int(m.group(1))
            for k, v in _load(f, allow_pickle)["module"].items():
                if torch.is_tensor(v):
                    shards[plain_param_name(k, False, n_blocks)][tp] = v.float()
    return shards


def _optim_shards(
    ckpt: Path,
    names: list[str],
    tensor: int,
    pipeline: int,
    n_blocks: int,
    shapes: dict[tuple[str, int], torch.Size],
    allow_pickle: bool = False,
) -> tuple[dict[str, dict[int, dict[str, torch.Tensor]]], int]:
    """Plain name -> {tp rank: {fp32, exp_avg, exp_avg_sq}} from ZeRO-1/2 partitions, and the step."""
    files = _optim_files(ckpt, names)
    out: dict[str, dict[int, dict[str, torch.Tensor]]] = defaultdict(dict)
    step = 0
    for mp, by_dp in files.items():
        # The grid's model-parallel rank is stage * tensor + tensor rank.
        tp = mp % tensor
        pieces: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
        for dp in sorted(by_dp):
            osd = _load(by_dp[dp], allow_pickle)["optimizer_state_dict"]
            base = osd["base_optimizer_state"]["state"]
            for g, mapping in enumerate(osd["param_slice_mappings"]):
                flat = {"fp32": osd["single_partition_of_fp32_groups"][g]}
                gstate = base.get(g, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in gstate:
                        flat[key] = gstate[key]
                if "step" in gstate:
                    step = int(torch.as_tensor(gstate["step"]).item())
                for name, frag in mapping.items():
                    for key, t in flat.items():
                        pieces[name][key].append(t.narrow(0, frag.start, frag.numel))
        for name, by_key in pieces.items():
            plain = plain_param_name(name, pipeline > 1, n_blocks)
            shape = shapes[(plain, tp)]
            out[plain][tp] = {k: torch.cat(v).float().view(shape) for k, v in by_key.items()}
    return out, step


def _optim_files(ckpt: Path, names: list[str]) -> dict[int, dict[int, Path]]:
    """mp rank -> partition rank -> optimizer-state file."""
    files: dict[int, dict[int, Path]] = defaultdict(dict)
    for name in names:
        m = _OPTIM_FILE.match(name)
        if m:
            files[int(m.group(2))][int(m.group(1))] = ckpt / name
    return files


def _zero3_shards(
    ckpt: Path, names: list[str], tensor: int, n_blocks: int, allow_pickle: bool = False
) -> tuple[dict[str, dict[int, dict[str, torch.Tensor]]], int, dict[str, str]]:
    """Plain name -> {tp rank: {fp32, exp_avg, exp_avg_sq}} of a ZeRO-3 checkpoint, the Adam
    step, and its tied names (name -> the name holding the tensor)."""
    out: dict[str, dict[int, dict[str, torch.Tensor]]] = defaultdict(dict)
    step, tied = 0, {}
    for mp, by_rank in _optim_files(ckpt, names).items():
        states_name = f"zero_pp_rank_0_mp_rank_{mp:02d}_model_states.pt"
        if states_name not in names:
            from mbtrain.errors import CheckpointError

            raise CheckpointError(f"{ckpt / states_name}: missing (parameter shapes of ZeRO-3)")
        states = _load(ckpt / states_name, allow_pickle)
        shapes = {k: v for group in states["param_shapes"] for k, v in group.items()}
        tied.update(states.get("shared_params") or {})
        world = len(by_rank)
        flats: dict[str, list[torch.Tensor]] = defaultdict(list)  # key -> per rank
        for r in range(world):
            osd = _load(by_rank[r], allow_pickle)["optimizer_state_dict"]
            base = osd["optimizer_state_dict"]["state"]
            flats["fp32"].append(torch.cat(list(osd["fp32_flat_groups"])))
            for key in ("exp_avg", "exp_avg_sq"):
                if all(key in base.get(g, {}) for g in range(len(osd["fp32_flat_groups"]))):
                    flats[key].append(torch.cat([base[g][key] for g in sorted(base)]))
            if base and "step" in base[min(base)]:
                step = int(torch.as_tensor(base[min(base)]["step"]).item())
        offset = 0
        for name, shape in shapes.items():
            numel = int(torch.Size(shape).numel())
            part = -(-numel // world)  # every rank holds ceil(numel / R), the last padded
            full = {
                key: torch.cat([flat.narrow(0, offset, part) for flat in per_rank])
                .narrow(0, 0, numel)
                .float()
                .view(shape)
                for key, per_rank in flats.items()
                if len(per_rank) == world
            }
            out[plain_param_name(name, False, n_blocks)][mp % tensor] = full
            offset += part
    tied = {
        plain_param_name(a, False, n_blocks): plain_param_name(b, False, n_blocks)
        for a, b in tied.items()
    }
    return out, step, tied


def read_full_checkpoint(
    root: Path, tag: str, info: dict, model_cfg: ModelConfig, allow_pickle: bool = False
) -> FullCheckpoint:
    """Weights (and Adam moments, where the checkpoint holds them) of any layout's
    checkpoint, unsharded. Opens only the files its marker lists."""
    ckpt = Path(root) / tag
    tensor, pipeline = int(info.get("tensor", 1)), int(info.get("pipeline", 1))
    zero = int(info.get("zero_stage", 0))
    names = listed_names(ckpt, info)
    n_blocks = model_cfg.stage_blocks
    module = _module_shards(ckpt, names, pipeline, n_blocks, allow_pickle)
    states_names = [n for n in names if _MP_FILE.match(n) or _Z3_STATES_FILE.match(n)]
    states = _load(ckpt / states_names[0], allow_pickle) if states_names else {}
    weights = {k: merge_shards(k, [v[r] for r in sorted(v)]) for k, v in module.items()}
    optim: dict[str, dict[str, torch.Tensor]] = {}
    step = 0
    if zero in (1, 2, 3):
        if zero == 3:
            parts, step, tied = _zero3_shards(ckpt, names, tensor, n_blocks, allow_pickle)
        else:
            shapes = {(k, r): t.shape for k, v in module.items() for r, t in v.items()}
            parts, step = _optim_shards(
                ckpt, names, tensor, pipeline, n_blocks, shapes, allow_pickle
            )
            tied = {}
        for k, by_tp in parts.items():
            ranks = sorted(by_tp)
            merged = {
                key: merge_shards(k, [by_tp[r][key] for r in ranks]) for key in by_tp[ranks[0]]
            }
            weights[k] = merged.pop("fp32")  # the exact fp32 master
            if merged:
                optim[k] = merged
        for name, holder in tied.items():
            if holder in weights:
                weights[name] = weights[holder]
        _fill_tied(weights, optim)
    elif zero == 0:
        optim, step = _zero0_optim(ckpt, names, tensor, pipeline, n_blocks, module, allow_pickle)
    return FullCheckpoint(weights, optim, step, states)


def _fill_tied(weights: dict[str, torch.Tensor], optim: dict) -> None:
    """Masters exist once per tied group: give the other names the same tensors."""
    for a, b in (("head.weight", "local_embed.weight"), ("head.weight", "embed.weight")):
        if a in weights and b in optim and a not in optim and weights[a].shape == weights[b].shape:
            weights[a] = weights[b]


def _zero0_optim(
    ckpt: Path,
    names: list[str],
    tensor: int,
    pipeline: int,
    n_blocks: int,
    module: dict,
    allow_pickle: bool = False,
) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
    """Adam moments of a ZeRO-0 checkpoint: the torch optimizer's state, indexed by the
    parameter names `name_param_groups` stored in its param groups."""
    out: dict[str, dict[int, dict[str, torch.Tensor]]] = defaultdict(dict)
    step = 0
    for f in (ckpt / name for name in names):
        m = _MP_FILE.match(f.name)
        if not m:
            continue
        mp = int(m.group(1))
        osd = _load(f, allow_pickle).get("optimizer")
        if not osd or "state" not in osd:
            continue
        for group in osd["param_groups"]:
            names = group.get(NAMES_KEY)
            if names is None:
                return {}, 0  # saved without names: weights only
            for idx, name in zip(group["params"], names):
                s = osd["state"].get(idx)
                if not s:
                    continue
                step = int(torch.as_tensor(s["step"]).item())
                out[plain_param_name(name, pipeline > 1, n_blocks)][mp % tensor] = {
                    "exp_avg": s["exp_avg"].float(),
                    "exp_avg_sq": s["exp_avg_sq"].float(),
                }
    merged = {}
    for k, by_tp in out.items():
        ranks = sorted(by_tp)
        merged[k] = {
            key: merge_shards(k, [by_tp[r][key] for r in ranks]) for key in by_tp[ranks[0]]
        }
    return merged, step


NAMES_KEY = "mbtrain_param_names"


def name_param_groups(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> None:
    """Store each group's parameter names in the group (saved with the optimizer state), so
    a ZeRO-0 checkpoint's Adam moments can be matched to names in another layout."""
    names = {id(p): n for n, p in module.named_parameters()}
    for group in optimizer.param_groups:
        group[NAMES_KEY] = [names[id(p)] for p in group["params"]]


def merge_parallel_checkpoint(
    root: Path, tag: str, info: dict, model_cfg: ModelConfig
) -> dict[str, torch.Tensor]:
    """Plain float32 state dict of a tensor/pipeline-parallel checkpoint."""
    return read_full_checkpoint(Path(root), tag, info, model_cfg).weights


def universal_checkpoint_info(module: torch.nn.Module) -> dict[str, Any]:
    """DeepSpeed's `universal_checkpoint_info` for a (tensor-parallel) engine module.

    Saved in the checkpoint's client state under `UNIVERSAL_CHECKPOINT_INFO`, it lets
    DeepSpeed's `ds_to_universal` merge this layout's shards: parameters without
    `tensor_model_parallel` are replicated over the tensor group, row-parallel ones are
    concatenated along dim 1, the rest (column-parallel) along dim 0. mbtrain's own
    resharding (`mbtrain.checkpoint.reshard`) does not need it; it is there for DeepSpeed's
    tooling.
    """
    from deepspeed.checkpoint.constants import (
        PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
        TP_REPLICATED_PARAMETER_PATTERNS,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    replicated, row = [], []
    for name, p in module.named_parameters():
        pattern = re.escape(name) + "$"
        if not getattr(p, "tensor_model_parallel", False):
            replicated.append(pattern)
        elif getattr(p, "partition_dim", 0) == 1:
            row.append(pattern)
    return {
        UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        TP_REPLICATED_PARAMETER_PATTERNS: replicated,
        PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: row,
    }
