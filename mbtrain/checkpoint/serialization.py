"""How checkpoint files are written and read: durably, and without unpickling code.

What is trusted. A `.pt` file is a pickle, and unpickling runs whatever the file says: a
crafted `checkpoints/step00000001/` would run a shell command in `mbtrain generate`. So every
torch file mbtrain reads goes through `load_torch_file`: `torch.load(weights_only=True)`,
which rebuilds tensors, numbers, strings, lists, tuples, dicts and nothing else, plus the
few plain data classes DeepSpeed's own files hold (`TRUSTED_CLASSES`: a fragment address, its
loss-scaler settings, its ZeRO stage enum), which carry data and run no code when rebuilt.
Everything mbtrain writes itself (RNG states, loader positions, the client state) is tensors
and plain values. JSON files (markers, model.json) and safetensors are data by construction.
`checkpoint.allow_pickle=true` lifts the restriction for checkpoints the user wrote with an
older mbtrain (which saved numpy arrays); it is never the default.

Durability. DeepSpeed writes its shards through a checkpoint engine; mbtrain gives it
`DurableCheckpointEngine`, which writes zip-format files (a truncated one is detected on
open: its central directory sits at the end), flushes each to disk (fsync) before the save
counts as done, records every file written with its size (the completion marker lists them,
so a file missing or cut short later is found before anything loads), and turns a failed
write (disk full) into a recorded error instead of an exception in the middle of DeepSpeed's
collective save, where one rank raising would leave the others waiting in a barrier forever.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mbtrain.errors import CheckpointError


def trusted_classes() -> list[Any]:
    """Plain data classes found in DeepSpeed's checkpoint files (rebuilt as data, no code)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [fragment_address, LossScaler, DynamicLossScaler, ZeroStageEnum]


def load_torch_file(path: str | Path, map_location: Any = "cpu", allow_pickle: bool = False) -> Any:
    """`torch.load` that rebuilds data only; CheckpointError naming the file otherwise."""
    path = Path(path)
    try:
        if allow_pickle:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(trusted_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        what = str(e).splitlines()[0] if str(e) else "an object"
        raise CheckpointError(
            f"{path}: refused to load: it holds more than tensors and plain values ({what}). "
            "mbtrain loads only data from checkpoints; if you wrote this checkpoint yourself "
            "with an older mbtrain, set checkpoint.allow_pickle=true"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: unreadable (truncated or corrupt: {first})") from None


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a directory's entries, to stable storage."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _WriteRecorder:
    """A file object for torch.save that remembers the first failed write: torch's zip writer
    turns it into an opaque "unexpected pos" RuntimeError, where the user needs the OSError
    (ENOSPC "No space left on device", EFBIG, EDQUOT)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_torch_file(obj: Any, path: str | Path) -> int:
    """torch.save in zip format, written aside, fsynced and renamed into place; its size.
    A failed write raises the OSError that caused it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            recorder = _WriteRecorder(f)
            try:
                torch.save(obj, recorder)
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


class DurableCheckpointEngine:
    """DeepSpeed checkpoint engine: fsynced zip files, a record of them, safe loading.

    Built around DeepSpeed's TorchCheckpointEngine (its create/commit/makedirs are kept);
    installed on an engine by `install_checkpoint_engine`.
    """

    def __init__(self, base: Any, allow_pickle: bool = False) -> None:
        self._base = base
        self.allow_pickle = allow_pickle
        self.written: dict[str, int] = {}
        """Absolute path -> size of every file written since `reset()`."""
        self.error: str | None = None
        """The first write that failed since `reset()` (the save then never completes)."""
        self.listed: set[str] | None = None
        """While loading: the absolute paths the checkpoint's marker lists; DeepSpeed asking
        for any other file is refused (a file dropped into the directory is never read)."""

    def __getattr__(self, name: str) -> Any:
        # Everything else (create, commit, makedirs, is_decoupled, ...) stays DeepSpeed's.
        return getattr(self._base, name)

    def reset(self) -> None:
        self.written, self.error = {}, None

    def save(self, state_dict: Any, path: str) -> None:
        if self.error is not None:
            return  # this save has already failed: no point filling the disk further
        try:
            self.written[os.path.abspath(path)] = save_torch_file(state_dict, path)
        except OSError as e:
            self.error = f"{path}: {e.strerror or e}"

    def load(self, path: str, map_location: Any = None) -> Any:
        if self.listed is not None and os.path.abspath(path) not in self.listed:
            raise CheckpointError(
                f"{path}: not among the files the checkpoint's marker lists; refusing to read it"
            )
        return load_torch_file(path, map_location or "cpu", self.allow_pickle)


def install_checkpoint_engine(engine: Any, allow_pickle: bool = False) -> DurableCheckpointEngine:
    """Replace `engine.checkpoint_engine` (DeepSpeed's torch engine) by the durable one."""
    current = engine.checkpoint_engine
    if isinstance(current, DurableCheckpointEngine):
        current.allow_pickle = allow_pickle
        return current
    if getattr(current, "is_decoupled", lambda: False)():
        raise CheckpointError("DeepSpeed's decoupled checkpoint engine is not supported")
    durable = DurableCheckpointEngine(current, allow_pickle)
    engine.checkpoint_engine = durable
    return durable
