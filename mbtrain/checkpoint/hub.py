"""Hugging Face Hub-compatible models: `from_pretrained`, `save_pretrained`, `push_to_hub`.

`mbtrain.MegaByte` and `mbtrain.ByteTransformer` are the model package's classes with
huggingface_hub's `PyTorchModelHubMixin` added: the same modules, parameters and forward
pass, plus the Hub's verbs. They live here and not in `mbtrain/model/`, because model files
are pure math (no I/O); what they read and write is the export format (`export.py`,
`hub_files.py`): a saved model is an export, and an export is a Hub model repo.

    model = mbtrain.MegaByte.from_pretrained("runs/demo/export")   # a directory or a Hub id
    model.save_pretrained("exported/")         # an export: weights, configs, card, modeling file
    model.push_to_hub("me/demo")               # the same files, uploaded (`hf auth login` first)

`load_pretrained` loads either architecture (`mbtrain.load_model` calls it for Hub ids).
A local directory is read as it is, without any network access; a Hub id is downloaded
(only the files a model needs) into huggingface_hub's cache, which `HF_HUB_OFFLINE=1` reads
without the network. A path that does not exist is taken for a Hub id only when it has the
form `owner/name` and `owner` is not a local directory: `runs/demo` misspelled in a project
that has `runs/` is a local typo, reported as one, not a download.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from torch import nn

from mbtrain.checkpoint.export import load_exported, read_export_config, strip_prefix, write_export
from mbtrain.checkpoint.hub_files import CLASS_OF_ARCH, CONFIG_FILE
from mbtrain.errors import CheckpointError, ConfigError
from mbtrain.model import baseline, megabyte
from mbtrain.model.config import ModelConfig

REPO_FILES = [CONFIG_FILE, "model.json", "model.safetensors"]
"""What a download fetches: the configs and the weights (not the card, not the code)."""

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]{1,96}")

TRANSFORMERS_KWARGS = frozenset({"config", "trust_remote_code", "adapter_kwargs", "subfolder"})
"""What `transformers.AutoModel.from_pretrained` passes on to remote code's `from_pretrained`:
its own config object and flags, none of which changes what an mbtrain model loads."""

T = TypeVar("T", bound="HubModel")


def is_hub_id(source: str | Path) -> bool:
    """Whether `source` is to be read as a Hub repo id: a str (a Path is always local), no
    such local path, the form `owner/name`, and `owner` not a local directory (see the
    module docstring)."""
    text = str(source)
    if isinstance(source, Path) or Path(text).exists() or not REPO_ID.fullmatch(text):
        return False
    return ".." not in text and not Path(text.split("/")[0]).is_dir()


def resolve_pretrained(
    source: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    proxies: dict | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local directory of `source`: itself, or its Hub repo downloaded into the cache.
    Every failure is a one-line CheckpointError."""
    path = Path(source)
    if path.is_dir():
        return path
    if not is_hub_id(source):
        raise CheckpointError(
            f"{source}: no such export directory (and not a Hugging Face Hub id, owner/name)"
        )
    try:
        return Path(
            snapshot_download(
                repo_id=str(source),
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                proxies=proxies,
                token=token,
                local_files_only=local_files_only,
                allow_patterns=REPO_FILES,
                library_name="mbtrain",
            )
        )
    except (HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{source}: no such local directory, and it cannot be loaded from the Hugging "
            f"Face Hub ({type(e).__name__}: {first})"
        ) from None


class HubModel(PyTorchModelHubMixin):
    """The Hub's verbs for an mbtrain model class (which sets `ARCH`); see the module doc."""

    ARCH: ClassVar[str] = ""
    cfg: ModelConfig
    export_meta: dict | None = None
    """The record of the export the model was loaded from (step, training data, eval), which
    `save_pretrained` writes again; None for a model built in this process."""

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | Path,
        *,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        proxies: dict | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> T:
        """The model of an export directory or a Hub repo, in eval mode on `map_location`.

        `dtype` (e.g. torch.bfloat16) casts the float32 weights after loading. A repo of the
        other architecture is a CheckpointError naming the class that loads it; a directory
        or repo that is no mbtrain export, or weights that do not fit its config, too.

        Example:
            >>> model = mbtrain.MegaByte.from_pretrained("runs/demo/export")
            >>> model = mbtrain.MegaByte.from_pretrained("me/demo", revision="v1")
        """
        unknown = sorted(set(kwargs) - TRANSFORMERS_KWARGS - {"torch_dtype"})
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained: unexpected arguments {unknown}")
        dtype = dtype if dtype is not None else kwargs.get("torch_dtype")
        directory = resolve_pretrained(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            proxies=proxies,
            token=token,
            local_files_only=local_files_only,
        )
        cfg, _ = read_export_config(directory)
        if cfg.arch != cls.ARCH:
            raise CheckpointError(
                f"{pretrained_model_name_or_path}: holds a model of arch {cfg.arch!r}, not "
                f"{cls.ARCH!r}: load it with mbtrain.{CLASS_OF_ARCH[cfg.arch]}.from_pretrained "
                "or mbtrain.load_model"
            )
        model = load_exported(directory, str(map_location), build=cls)
        return _cast(model, dtype)

    def _save_pretrained(self, save_directory: Path) -> None:
        """An export into `save_directory` (which `save_pretrained` has created): the same
        files `mbtrain export` writes, refused where it would replace anything else."""
        assert isinstance(self, nn.Module)
        write_export(strip_prefix(self.state_dict()), self.cfg, save_directory, self.export_meta)


def _cast(model: T, dtype: torch.dtype | str | None) -> T:
    if dtype is None or dtype == "auto":
        return model
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype: a floating-point torch dtype (e.g. torch.bfloat16), got {dtype}")
    assert isinstance(model, nn.Module)
    return model.to(dtype)


_CARD = {
    "library_name": "mbtrain",
    "pipeline_tag": "text-generation",
    "paper_url": "https://arxiv.org/abs/2305.07185",
}


class MegaByte(megabyte.MegaByte, HubModel, tags=["mbtrain", "megabyte", "byte-level"], **_CARD):
    """MEGABYTE byte-level language model, loadable from and savable to the Hugging Face Hub.

    The model of `mbtrain.model.MegaByte` (same parameters, same forward: `model(x)` with x
    LongTensor [B, T] of byte values returns next-byte logits [B, T, 256]) with
    `from_pretrained`, `save_pretrained` and `push_to_hub`.

    Example:
        >>> model = mbtrain.MegaByte.from_pretrained("runs/demo/export")
        >>> mbtrain.score_bytes(model, b"def f(x):\\n    return x\\n").bpb
        >>> model.push_to_hub("me/demo")
    """

    ARCH = "megabyte"


class ByteTransformer(
    baseline.ByteTransformer, HubModel, tags=["mbtrain", "transformer", "byte-level"], **_CARD
):
    """The byte-level transformer baseline, loadable from and savable to the Hugging Face Hub
    (`mbtrain.model.ByteTransformer` with `from_pretrained`, `save_pretrained`,
    `push_to_hub`; see `MegaByte`)."""

    ARCH = "transformer"


HUB_CLASSES: dict[str, type[HubModel]] = {"megabyte": MegaByte, "transformer": ByteTransformer}


def build_hub_model(cfg: ModelConfig) -> nn.Module:
    """The Hub class of `cfg.arch` for `cfg` (as `mbtrain.model.build_model`, which it
    mirrors: ConfigError if `cfg` is invalid)."""
    problems = cfg.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    model = HUB_CLASSES[cfg.arch](cfg)
    assert isinstance(model, nn.Module)
    return model


def load_pretrained(source: str | Path, device: str = "cpu", **hub_kwargs: Any) -> nn.Module:
    """The model of an export directory or Hub repo, of whichever architecture it holds
    (`hub_kwargs`: revision, token, cache_dir, local_files_only, ... as `from_pretrained`)."""
    directory = resolve_pretrained(source, **hub_kwargs)
    cfg, _ = read_export_config(directory)
    model = HUB_CLASSES[cfg.arch].from_pretrained(directory, map_location=device)
    assert isinstance(model, nn.Module)
    return model
