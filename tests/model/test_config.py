import itertools
import re
from dataclasses import fields

import pytest

from mbtrain.errors import ConfigError
from mbtrain.model import ModelConfig, build_model


def test_defaults_are_the_paper_text_setting():
    cfg = ModelConfig()
    assert cfg.validate() == []
    assert (cfg.patch_size, cfg.seq_len, cfg.global_width, cfg.global_dim) == (8, 8192, 2048, 256)
    assert (cfg.global_layers, cfg.local_layers, cfg.local_dim) == (14, 18, 1024)
    assert (cfg.dropout, cfg.init_std, cfg.norm) == (0.1, 0.006, "layernorm")


def test_every_field_has_a_docstring():
    import ast
    import inspect

    import mbtrain.model.config as mod

    tree = ast.parse(inspect.getsource(mod))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelConfig")
    body = cls.body
    documented = set()
    for a, b in itertools.pairwise(body):
        is_doc = isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
        if isinstance(a, ast.AnnAssign) and is_doc and isinstance(b.value.value, str):
            documented.add(a.target.id)
    assert documented == {f.name for f in fields(ModelConfig)}


def test_patch_size_must_divide_seq_len():
    errs = ModelConfig(patch_size=7).validate()
    assert "model.patch_size: must divide model.seq_len (8192), got 7" in errs


def test_all_problems_reported_at_once():
    cfg = ModelConfig(patch_size=7, global_dim=10, global_heads=3, local_heads=5, norm="batch")
    errs = cfg.validate()
    assert any(e.startswith("model.patch_size:") for e in errs)
    assert "model.global_heads: must divide model.patch_size * model.global_dim (70), got 3" in errs
    assert "model.local_heads: must divide model.local_dim (1024), got 5" in errs
    assert "model.norm: must be one of layernorm, rmsnorm, got 'batch'" in errs


def test_baseline_heads_and_rope_head_dim():
    assert (
        "model.heads: must divide model.dim (1024), got 3"
        in ModelConfig(arch="transformer", heads=3).validate()
    )
    errs = ModelConfig.tiny(pos="rope", local_dim=36, local_heads=12).validate()
    assert any("must be even for pos: rope" in e for e in errs)


def test_build_model_raises_one_line_config_error():
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig.tiny(patch_size=5, arch="megabyte"))
    assert "\n" not in str(info.value)
    assert "model.patch_size: must divide model.seq_len (64), got 5" in str(info.value)


def test_model_files_are_pure_math():
    """No torch.distributed, DeepSpeed or file I/O under mbtrain/model (DESIGN.md)."""
    from pathlib import Path

    import mbtrain.model as pkg

    banned = re.compile(r"^\s*(import|from)\s+(torch\.distributed|deepspeed)|\bopen\(", re.M)
    for path in Path(pkg.__file__).parent.glob("*.py"):
        assert not banned.search(path.read_text()), path.name
