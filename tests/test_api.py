"""The Python API at the top (`mbtrain.api`, exposed lazily by `mbtrain/__init__.py`), and the
README's "## Python" block, run as written."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import mbtrain
from mbtrain import api
from mbtrain.errors import ConfigError, DataError
from mbtrain.model import ModelConfig

REPO = Path(__file__).resolve().parents[1]
API = ("load_model", "score_bytes", "generate", "prepare", "train")
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_import_mbtrain_is_cheap():
    code = (
        "import json, sys, mbtrain; "
        "print(json.dumps([m for m in ('torch', 'deepspeed', 'transformers', 'huggingface_hub', "
        "'streaming', 'pyarrow') if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_every_api_function_has_hints_and_an_example():
    for name in API:
        fn = getattr(api, name)
        assert fn.__doc__ and "Example:" in fn.__doc__ and ">>> " in fn.__doc__, name
        hints = inspect.get_annotations(fn)
        assert "return" in hints and set(inspect.signature(fn).parameters) <= set(hints), name
        if name != "train":  # `mbtrain.train` is the (callable) training package
            assert getattr(mbtrain, name) is fn
    assert mbtrain.MegaByte.from_pretrained.__doc__ and mbtrain.ModelConfig is ModelConfig
    for name in ("prepare", "merge", "build_loader", "iter_documents", "iter_val_bytes"):
        fn = getattr(mbtrain.data, name)
        assert not fn.__doc__.startswith("See") and "Example:" in fn.__doc__, name
        assert "return" in inspect.get_annotations(fn), name


def test_train_stays_callable_once_the_training_package_is_imported(monkeypatch):
    import mbtrain.train.loop  # binds the subpackage to `mbtrain.train`, as any import does
    from mbtrain import train

    assert train is mbtrain.train and callable(train)
    seen = []
    monkeypatch.setattr(mbtrain.train.loop, "train", lambda cfg: seen.append(cfg) or "done")
    recipe = REPO / "recipes" / "tiny_cpu.yaml"
    assert mbtrain.train(recipe, "train.steps=7", run={"dir": "runs/x"}) == "done"
    assert mbtrain.train(recipe, **{"train.steps": 9, "data.val": None}) == "done"
    first, second = seen
    assert first.train.steps == 7 and first.run.dir == "runs/x" and first.model.seq_len == 512
    assert second.train.steps == 9 and second.data.val is None
    # A RunConfig, with keyword sections over it.
    assert mbtrain.train(first, train={"steps": 3}) == "done"
    assert seen[-1].train.steps == 3 and seen[-1].run.dir == "runs/x"
    with pytest.raises(ConfigError) as info:
        mbtrain.train(recipe, "train.stepz=1", model={"patch_sise": 4})
    msg = str(info.value)
    assert "train.stepz" in msg and "model.patch_sise" in msg and "2 problems" in msg


def test_score_bytes_takes_bytes_files_directories_and_refuses_text(tmp_path):
    from mbtrain.model import build_model
    from mbtrain.model import score_bytes as model_score_bytes

    model = build_model(ModelConfig.tiny())
    a, b = b"def f(x):\n    return x + 1\n" * 6, bytes(range(256))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.py").write_bytes(a)
    (tmp_path / "d" / "b.bin").write_bytes(b)
    one = mbtrain.score_bytes(model, a, mode="basic")
    assert one == mbtrain.score_bytes(model, tmp_path / "d" / "a.py", mode="basic")
    assert one == mbtrain.score_bytes(model, str(tmp_path / "d" / "a.py"), mode="basic")
    assert one.bytes == len(a) and one.documents == 1 and one.context == 64
    assert abs(one.bpb - model_score_bytes(model, a, 64).bpb) < 1e-6  # batches: float32 sums
    both = mbtrain.score_bytes(model, tmp_path / "d")
    assert both.documents == 2 and both.bytes == len(a) + len(b) and both.mode == "sliding"
    assert mbtrain.score_bytes(model, tmp_path / "d", max_bytes=100).bytes == 100
    with pytest.raises(DataError, match=r"text\.encode\(\)"):
        mbtrain.score_bytes(model, "hello world")
    with pytest.raises(DataError, match="no bytes to score"):
        mbtrain.score_bytes(model, b"")
    with pytest.raises(ValueError, match="context"):
        mbtrain.score_bytes(model, a, context=65)
    out = mbtrain.generate(model, "def ", max_bytes=12, temperature=0)
    assert isinstance(out, bytes) and len(out) == 12
    assert out == mbtrain.generate(model, b"def ", max_bytes=12, temperature=0)


def test_prepare_reports_every_unknown_setting_at_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        mbtrain.prepare(tmp_path, tmp_path / "out", seq_lenn=512, val_fractoin=0.1)
    msg = str(info.value)
    assert "seq_lenn" in msg and "val_fractoin" in msg and "seq_len" in msg


def readme_python_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "no python block under ## Python"
    return block.group(1)


@pytest.mark.slow
def test_readme_python_block_runs_as_written(tmp_path):
    """The block in a fresh interpreter, in a directory holding what it names: a run at
    runs/demo (its export), notes.txt, a notes/ folder of real text, the recipes."""
    from mbtrain.checkpoint.export import strip_prefix, write_export
    from mbtrain.model import build_model

    cfg = ModelConfig.tiny()
    write_export(strip_prefix(build_model(cfg).state_dict()), cfg, tmp_path / "runs/demo/export")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (tmp_path / "notes.txt").write_bytes((stdlib / "json" / "__init__.py").read_bytes())
    (tmp_path / "notes").mkdir()
    for f in sorted(stdlib.glob("json/*.py")) + sorted(stdlib.glob("email/*.py"))[:12]:
        shutil.copy(f, tmp_path / "notes" / f"{f.parent.name}_{f.name}")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    proc = subprocess.run(
        [sys.executable, "-c", readme_python_block()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    bpb = float(proc.stdout.splitlines()[0])
    assert 7.0 < bpb < 9.0  # an untrained model: about 8 bits per byte
    assert (tmp_path / "data/notes/train/index.json").is_file()
    assert (tmp_path / "runs/notes/checkpoints").is_dir()
    exported = tmp_path / "exported" / "notes"
    for name in ("model.safetensors", "model.json", "config.json", "README.md"):
        assert (exported / name).is_file(), name
    assert "Steps: 10" in (exported / "README.md").read_text()
    assert mbtrain.MegaByte.from_pretrained(exported).cfg.seq_len == 512
