"""What makes an export directory a Hugging Face Hub model repo, besides the weights.

An export holds `model.safetensors` and `model.json` (what mbtrain reads) and, beside them:

* `config.json`: the ModelConfig's fields, flat, plus what transformers needs to find the
  class (`model_type`, `architectures`, `auto_map`). It repeats model.json for the Hub;
  mbtrain reads model.json when both are there, and refuses an export where they disagree.
* `modeling_mbtrain.py`: the module `auto_map` names, for
  `transformers.AutoModel.from_pretrained(repo, trust_remote_code=True)`. transformers copies
  it from the repo and runs it; it holds no model code of its own, only names mbtrain's
  classes for transformers' auto classes, so the `mbtrain` package must be installed.
* `README.md`: the model card, with YAML front matter for the Hub: the architecture, the
  training data (paths and content fingerprints), the steps, and `mbtrain eval`'s result
  beside gzip/bzip2/xz when the run was evaluated.

The card is rendered from model.json's record alone (`model_card(cfg, meta)`), so a model
loaded from an export and saved again (`save_pretrained`, `push_to_hub`) keeps its card.
`run_record` gathers that record from a run directory when an export is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mbtrain.checkpoint.paths import COMPLETE_MARKER, read_marker, resume_candidates, step_of_tag
from mbtrain.errors import CheckpointError
from mbtrain.model.config import ModelConfig
from mbtrain.model.flops import count_parameters

log = logging.getLogger(__name__)

MODEL_TYPE = "mbtrain"
CONFIG_FILE = "config.json"
MODELING_FILE = "modeling_mbtrain.py"
CARD_FILE = "README.md"
HUB_FILES = frozenset({CONFIG_FILE, MODELING_FILE, CARD_FILE})

CLASS_OF_ARCH = {"megabyte": "MegaByte", "transformer": "ByteTransformer"}
"""The class (in `mbtrain` and in the modeling file) that builds each `model.arch`."""

MODELING_CODE = '''\
"""transformers glue for an mbtrain model: AutoModel.from_pretrained(repo, trust_remote_code=True).

The model code is mbtrain's own: `pip install mbtrain` first. This file only names mbtrain's
classes for transformers' auto classes; without transformers, `mbtrain.load_model(repo)` or
`mbtrain.MegaByte.from_pretrained(repo)` load the same weights. Written by `mbtrain export`.
"""

from transformers import PretrainedConfig

import mbtrain


class MbtrainConfig(PretrainedConfig):
    """config.json as transformers reads it; the model reads model.json's ModelConfig itself."""

    model_type = "mbtrain"


class _AutoModelGlue:
    config_class = MbtrainConfig

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        """transformers calls this on remote code; these classes need no registration."""


class MegaByte(_AutoModelGlue, mbtrain.MegaByte):
    """mbtrain.MegaByte, as transformers' AutoModel finds it."""


class ByteTransformer(_AutoModelGlue, mbtrain.ByteTransformer):
    """mbtrain.ByteTransformer (the byte-level baseline), as transformers' AutoModel finds it."""
'''


def package_version() -> str:
    """The installed mbtrain's version (recorded in config.json)."""
    try:
        return metadata.version("mbtrain")
    except metadata.PackageNotFoundError:
        return "unknown"


def hub_config(cfg: ModelConfig) -> dict[str, Any]:
    """config.json: what transformers needs to find the class, then the ModelConfig, flat."""
    name = CLASS_OF_ARCH[cfg.arch]
    return {
        "model_type": MODEL_TYPE,
        "architectures": [name],
        "auto_map": {
            "AutoConfig": f"{MODELING_FILE[:-3]}.MbtrainConfig",
            "AutoModel": f"{MODELING_FILE[:-3]}.{name}",
        },
        "mbtrain_version": package_version(),
        **dataclasses.asdict(cfg),
    }


def model_values_of_hub_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields of a config.json. Other keys (transformers' own, and whatever a
    tool that rewrote the file added) are not ours to judge; the weights' names and shapes
    are checked against the result all the same."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return {k: v for k, v in config.items() if k in names}


def write_hub_files(out: Path, cfg: ModelConfig, meta: dict[str, Any]) -> None:
    """config.json, the modeling file and the model card into the export directory `out`."""
    (out / CONFIG_FILE).write_text(json.dumps(hub_config(cfg), indent=2) + "\n")
    (out / MODELING_FILE).write_text(MODELING_CODE)
    (out / CARD_FILE).write_text(model_card(cfg, meta))


# --- what a run directory says about the exported weights --------------------------------


def run_record(
    run_dir: Path | None,
    step: int | None,
    marker: dict | None = None,
    saved_at: float | None = None,
    evaluated: bool = True,
) -> dict[str, Any]:
    """The card's record of a run, as model.json keeps it: `training` (data paths from the
    run's config.yaml, fingerprints from the checkpoint marker's `dataset`, the last
    validation in metrics.jsonl up to `step`) and `eval` (`<run_dir>/eval.json`, unless it is
    older than the exported checkpoint, saved at `saved_at`, or `evaluated` is False: eval.json
    does not say which step it scored). `marker` None: the newest checkpoint's, if it is the
    one of `step`. Missing pieces are left out: a card says "not recorded" rather than guess."""
    if run_dir is None:
        return {}
    if marker is None:
        marker, saved_at = _newest_marker(run_dir / "checkpoints", step)
    training: dict[str, Any] = {}
    data = _training_data(run_dir / "config.yaml")
    streams = (marker or {}).get("dataset", {}).get("train")
    if isinstance(streams, list):
        data["fingerprints"] = [s.get("fingerprint") for s in streams if isinstance(s, dict)]
    if data:
        training["data"] = data
    validation = _last_validation(run_dir / "metrics.jsonl", step)
    if validation:
        training["validation"] = validation
    record: dict[str, Any] = {"training": training} if training else {}
    result = _eval_result(run_dir / "eval.json", saved_at) if evaluated else None
    if result:
        record["eval"] = result
    return record


def _newest_marker(root: Path, step: int | None) -> tuple[dict | None, float | None]:
    """(marker, its time) of the newest checkpoint under `root` if it is the one of `step`."""
    try:
        candidates = resume_candidates(root) if root.is_dir() else []
    except OSError:
        return None, None
    if not candidates or (step is not None and step_of_tag(candidates[0]) != step):
        return None, None
    try:
        return read_marker(root / candidates[0]), checkpoint_time(root / candidates[0])
    except CheckpointError:
        return None, None


def checkpoint_time(ckpt_dir: Path) -> float | None:
    """When a checkpoint was completed (its marker's modification time), or None."""
    try:
        return (ckpt_dir / COMPLETE_MARKER).stat().st_mtime
    except OSError:
        return None


def _training_data(config_yaml: Path) -> dict[str, Any]:
    try:
        data = (yaml.safe_load(config_yaml.read_text()) or {}).get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    if not isinstance(data, dict):
        return {}
    mix = data.get("mix") or []
    train = [m.get("path") for m in mix if isinstance(m, dict)] if mix else [data.get("train")]
    out: dict[str, Any] = {"train": [str(p) for p in train if p]}
    if data.get("val"):
        out["val"] = str(data["val"])
    return out if out["train"] or "val" in out else {}


def _last_validation(metrics: Path, step: int | None) -> dict[str, Any] | None:
    last = None
    try:
        with metrics.open() as f:
            for line in f:
                if "val_bpb" not in line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                if isinstance(row.get("val_bpb"), (int, float)) and (
                    step is None or row.get("step", 0) <= step
                ):
                    last = {"step": row.get("step"), "val_bpb": float(row["val_bpb"])}
    except OSError:
        return None
    return last


EVAL_KEYS = ("modes", "compressors", "compressors_per_document", "bytes", "documents", "context")


def _eval_result(path: Path, saved_at: float | None) -> dict[str, Any] | None:
    """eval.json's result if it is readable and not older than the exported checkpoint."""
    try:
        if saved_at is not None and path.stat().st_mtime < saved_at:
            log.info(f"{path} predates the exported checkpoint; the card says not evaluated")
            return None
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not isinstance(result.get("modes"), dict):
        return None
    out = {k: result[k] for k in EVAL_KEYS if k in result}
    if isinstance(result.get("data"), list):
        out["data"] = [str(d) for d in result["data"]]
    return out


# --- the model card ------------------------------------------------------------------------


def model_card(cfg: ModelConfig, meta: dict[str, Any]) -> str:
    """README.md of an export: front matter, the model, its training, its evaluation, usage."""
    arch = "MegaByte" if cfg.arch == "megabyte" else "byte-level transformer (baseline)"
    front = {
        "library_name": "mbtrain",
        "pipeline_tag": "text-generation",
        "tags": sorted({"mbtrain", "byte-level", cfg.arch}),
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=True).strip(),
        "---",
        "",
        f"# {arch} byte-level language model",
        "",
        "Trained with mbtrain (MEGABYTE: Yu et al., 2023, *Predicting Million-byte Sequences "
        "with Multiscale Transformers*). It reads and predicts raw bytes: all 256 byte values are data, there is no tokenizer.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {cfg.arch} |",
        f"| parameters | {count_parameters(cfg):,} |",
        f"| context | {cfg.seq_len:,} bytes ({cfg.pos} positions) |",
    ]
    if cfg.arch == "megabyte":
        lines += [
            f"| patch size | {cfg.patch_size} |",
            f"| global model | {cfg.global_layers} layers, width {cfg.global_width} "
            f"({cfg.global_dim} per byte), {cfg.global_heads} heads |",
            f"| local model | {cfg.local_layers} layers, width {cfg.local_dim}, "
            f"{cfg.local_heads} heads |",
        ]
    else:
        lines.append(f"| transformer | {cfg.layers} layers, width {cfg.dim}, {cfg.heads} heads |")
    lines += ["", "## Training", "", *_training_lines(meta), "", "## Evaluation", ""]
    lines += _eval_lines(meta.get("eval"))
    lines += ["", "## Use", "", *USAGE]
    return "\n".join(lines) + "\n"


def _training_lines(meta: dict[str, Any]) -> list[str]:
    step = meta.get("step")
    training = meta.get("training") or {}
    data = training.get("data") or {}
    lines = [f"- Steps: {step:,}" if isinstance(step, int) else "- Steps: not recorded"]
    fingerprints = data.get("fingerprints") or []
    if data.get("train"):
        for i, path in enumerate(data["train"]):
            fp = fingerprints[i] if i < len(fingerprints) else None
            note = f" (content fingerprint `{fp}`)" if fp else ""
            lines.append(f"- Training data: `{path}`{note}")
    elif fingerprints:
        lines.append(f"- Training data: content fingerprint(s) {', '.join(map(str, fingerprints))}")
    else:
        lines.append("- Training data: not recorded (exported outside its run directory)")
    if data.get("val"):
        lines.append(f"- Validation data: `{data['val']}`")
    validation = training.get("validation")
    if validation:
        lines.append(
            f"- Validation during training: {validation['val_bpb']:.4f} bits per byte "
            f"(step {validation['step']})"
        )
    return lines


def _eval_lines(result: dict[str, Any] | None) -> list[str]:
    if not result or not result.get("modes"):
        return [
            "Not evaluated. `mbtrain eval RUN_DIR DATA -o RUN_DIR/eval.json`, then "
            "`mbtrain export RUN_DIR --out DIR`, puts its numbers here."
        ]
    where = ", ".join(f"`{d}`" for d in result.get("data", [])) or "held-out data"
    size = f"{result['bytes']:,} bytes" if isinstance(result.get("bytes"), int) else "bytes"
    docs = result.get("documents")
    context = result.get("context")
    lines = [
        f"`mbtrain eval` on {size}"
        + (f" in {docs:,} document(s)" if isinstance(docs, int) else "")
        + f" of {where}"
        + (f", context {context:,} bytes" if isinstance(context, int) else "")
        + ", beside general-purpose compressors on the same bytes (lower is better):",
        "",
        "| | bits per byte |",
        "|---|---|",
    ]
    for i, (mode, bpb) in enumerate(result["modes"].items()):
        name = f"this model ({mode} windows)"
        lines.append(f"| **{name}** | **{bpb:.4f}** |" if i == 0 else f"| {name} | {bpb:.4f} |")
    alone = result.get("compressors_per_document") or {}
    for name, bpb in (result.get("compressors") or {}).items():
        extra = f" (each document alone: {alone[name]:.4f})" if name in alone else ""
        lines.append(f"| {name} | {bpb:.4f}{extra} |")
    return lines


USAGE = [
    "With the `mbtrain` package installed (`pip install mbtrain`), no DeepSpeed needed:",
    "",
    "```python",
    "import mbtrain",
    "",
    'model = mbtrain.load_model("path/or/hub-id")   # this directory, or its Hub repo id',
    'print(mbtrain.score_bytes(model, b"def f(x):\\n    return x + 1\\n").bpb)',
    'print(mbtrain.generate(model, "def ", max_bytes=80))',
    "```",
    "",
    "With transformers (its `modeling_mbtrain.py` imports `mbtrain`, so install that too):",
    "",
    "```python",
    "from transformers import AutoModel",
    "",
    'model = AutoModel.from_pretrained("path/or/hub-id", trust_remote_code=True)',
    "```",
]
