"""Layered, strict config: precedence, every problem at once, cross-field checks, recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.errors import ConfigError
from mbtrain.train.run_config import check_layout, load_config, save_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_layering_precedence(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  steps: 10\n  seed: 1\ndata:\n  train: a/train\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  steps: 20\n")
    cfg = load_config(child, ["train.seed=7"])
    assert cfg.train.steps == 20  # recipe over its base
    assert cfg.train.seed == 7  # override over recipe
    assert cfg.train.micro_batch_size == 1  # dataclass default
    assert cfg.data.train == "a/train"  # inherited from the base


def test_interpolation_of_run_dir(tmp_path):
    r = write(tmp_path / "r.yaml", "run:\n  name: exp1\ndata:\n  train: x\n")
    assert load_config(r).run.dir == "runs/exp1"
    assert load_config(r, ["run.dir=/tmp/elsewhere"]).run.dir == "/tmp/elsewhere"


def test_every_unknown_key_and_type_error_at_once_with_origin(tmp_path):
    r = write(
        tmp_path / "r.yaml",
        "data:\n  train: x\ntrain:\n  stpes: 10\n  micro_batch_size: many\nmodle:\n  arch: megabyte\n",
    )
    with pytest.raises(ConfigError) as e:
        load_config(r, ["parallel.tensr=2", "train.seed=abc"])
    msg = str(e.value)
    assert "5 problems" in msg
    assert f"train.stpes: unknown key; did you mean 'train.steps'? ({r}:4)" in msg
    assert f"train.micro_batch_size: expected int, got 'many' ({r}:5)" in msg
    assert "modle: unknown key; did you mean 'model'?" in msg and f"({r}:6)" in msg
    assert (
        "parallel.tensr: unknown key; did you mean 'parallel.tensor'? (override 'parallel.tensr=2')"
        in msg
    )
    assert "train.seed: expected int, got 'abc'" in msg


def test_numbers_in_overrides_and_scientific_notation(tmp_path):
    r = write(tmp_path / "r.yaml", "data:\n  train: x\n")
    cfg = load_config(r, ["optim.lr=1e-3", "optim.betas=[0.9,0.95]", "train.steps=5.0"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.betas == [0.9, 0.95]
    assert cfg.train.steps == 5


def test_value_checks_reported_together(tmp_path):
    r = write(tmp_path / "r.yaml", "data:\n  train: x\nmodel:\n  seq_len: 100\n  patch_size: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(r, ["logging.wandb=sometimes", "parallel.pipeline=2", "parallel.zero_stage=3"])
    msg = str(e.value)
    assert "model.patch_size: must divide model.seq_len (100), got 8" in msg
    assert "logging.wandb: must be one of online, offline, disabled" in msg
    assert "parallel.zero_stage" in msg and "pipeline" in msg


def test_bad_yaml_and_missing_recipe_name_the_file_and_line(tmp_path):
    r = write(tmp_path / "r.yaml", "train:\n  steps: [1,\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:\d+: not valid YAML"):
        load_config(r)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "nope.yaml")
    cyc = write(tmp_path / "cyc.yaml", "base: cyc.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(cyc)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.steps"])


def _cfg(tmp_path, *overrides):
    r = write(
        tmp_path / "r.yaml", "data:\n  train: x\nmodel:\n  global_heads: 16\n  global_layers: 14\n"
    )
    return load_config(r, list(overrides))


def test_layout_arithmetic(tmp_path):
    cfg = _cfg(
        tmp_path,
        "parallel.tensor=2",
        "parallel.pipeline=2",
        "model.doc_mask=false",
        "train.micro_batch_size=2",
        "train.grad_accum=4",
    )
    layout = check_layout(cfg, 8)
    assert (layout.tensor, layout.pipeline, layout.data) == (2, 2, 2)
    assert cfg.train.global_batch(layout.data) == 2 * 4 * 2
    assert layout.ranks_per_sample == 4 and layout.weight_shards == 4
    assert layout.marker() == {
        "pipeline": 2, "data": 2, "context": 1, "tensor": 2, "context_ring": 1, "zero_stage": 0
    }  # fmt: skip


def test_layout_errors_say_what_would_work(tmp_path):
    cfg = _cfg(tmp_path, "parallel.tensor=3", "train.global_batch_size=10")
    with pytest.raises(ConfigError) as e:
        check_layout(cfg, 4)
    msg = str(e.value)
    assert "= 3 does not divide the world size (4)" in msg and "valid products: 1, 2, 4" in msg
    assert "model.global_heads (16) must be divisible by parallel.tensor (3)" in msg
    cfg = _cfg(tmp_path, "train.global_batch_size=16", "train.micro_batch_size=2")
    with pytest.raises(ConfigError, match=r"set train.grad_accum=2"):
        check_layout(cfg, 4)
    cfg = _cfg(tmp_path, "parallel.pipeline=4", "model.doc_mask=false")
    with pytest.raises(
        ConfigError, match=r"global_layers \(14\) must be divisible by parallel.pipeline \(4\)"
    ):
        check_layout(cfg, 4)


def test_resolved_config_round_trips(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=33", "run.name=a b")
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg


def test_deepspeed_config_is_generated_from_the_typed_config(tmp_path):
    from mbtrain.train.ds_config import build_deepspeed_config

    cfg = _cfg(
        tmp_path,
        "train.micro_batch_size=3",
        "train.grad_accum=2",
        "parallel.zero_stage=2",
        "train.precision=bf16",
        "optim.grad_clip=0.5",
    )
    layout = check_layout(cfg, 4)
    ds = build_deepspeed_config(cfg.train, cfg.optim, layout)
    assert ds["train_batch_size"] == 3 * 2 * 4
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["bf16"]["enabled"] is True
    assert ds["gradient_clipping"] == 0.5


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_recipe_loads_and_validates(recipe):
    cfg = load_config(recipe)
    world = cfg.cluster.nodes * cfg.cluster.tasks_per_node
    layout = check_layout(cfg, world)
    assert layout.data >= 1
    assert cfg.model.seq_len % (cfg.model.patch_size if cfg.model.arch == "megabyte" else 1) == 0


def test_cli_prints_one_clear_message_and_exits_2(tmp_path):
    r = write(tmp_path / "r.yaml", "data:\n  train: x\ntrain:\n  stpes: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "train", str(r), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "train.stpes: unknown key; did you mean 'train.steps'?" in proc.stderr


def test_cli_dry_run_prints_layout_and_deepspeed_config(tiny_dataset):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbtrain.cli.main",
            "train",
            str(REPO / "recipes/tiny_cpu.yaml"),
            f"data.train={tiny_dataset}/train",
            f"data.val={tiny_dataset}/val",
            "model.seq_len=128",
            "--dry-run",
            "--world-size",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "train_batch_size" in proc.stdout and "data 2" in proc.stdout


def test_environment_never_reaches_free_text(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "s3cret-key")
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    r = write(tmp_path / "r.yaml", "data:\n  train: x\ntag: ${oc.env:WANDB_API_KEY}\n")
    for overrides in (
        ["run.name=exp-${oc.env:WANDB_API_KEY}"],
        ["train.sample_prompt=${oc.env:WANDB_API_KEY}"],
        ['cluster.setup=["export K=${oc.env:WANDB_API_KEY}"]'],
    ):
        with pytest.raises(ConfigError) as e:
            load_config(REPO / "recipes" / "tiny_cpu.yaml", overrides)
        assert "environment variable" in str(e.value) and "s3cret" not in str(e.value)
    # Through another key, and from a recipe file: found all the same, with the file named.
    r2 = write(tmp_path / "r2.yaml", "data:\n  train: x\nrun:\n  name: ${logging.project}\n")
    with pytest.raises(ConfigError, match=r"run\.name: takes its value .*r2\.yaml:4"):
        load_config(r2, ["logging.project=${oc.env:WANDB_API_KEY}"])
    with pytest.raises(ConfigError, match="tag: unknown key"):
        load_config(r)  # an unknown key still fails as such, and nothing leaked
    # Paths and numbers may use the environment (the usual cluster idiom).
    cfg = load_config(
        REPO / "recipes" / "tiny_cpu.yaml",
        ["data.train=${oc.env:SCRATCH}/corpus/train", "run.dir=${oc.env:SCRATCH}/runs/a"],
    )
    assert cfg.data.train == "/scratch/me/corpus/train" and cfg.run.dir == "/scratch/me/runs/a"
    assert cfg.run.name == "tiny-cpu"


def test_python_tags_in_a_recipe_are_one_line_errors(tmp_path):
    marker = tmp_path / "pwned"
    r = write(
        tmp_path / "r.yaml",
        f"data:\n  train: x\nrun:\n  name: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ConfigError, match=r"r\.yaml:4: run\.name: tag .*python/object"):
        load_config(r)
    out = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "train", str(r), "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr and not marker.exists()


SECRET = "s3cret-d0-not-print"
# Each reaches a free-text field from ${oc.env:MB_SECRET} without a plain `${a.b}` chain
# (data.local_cache, a path, holds the secret: paths may use the environment).
HIDDEN_ENV_FORMS = {
    "oc.select": ["run.name=${oc.select:data.local_cache}"],
    "relative": ["run.dir=${oc.env:MB_SECRET}", "run.name=${.dir}"],
    "relative-parent": ['cluster.setup=["cd ${...data.local_cache}"]'],
    "nested-select": ["data.val=data.local_cache", "run.name=${oc.select:${data.val}}"],
    "select-default": ["logging.project=${oc.select:no.such.key,${..data.local_cache}}"],
    "decode": ["train.sample_prompt=${oc.decode:${oc.select:data.local_cache}}"],
    "embedded-text": ["logging.entity=team-${oc.select:data.local_cache}-x"],
    "env-default": ["data.val=${oc.env:MB_UNSET,${oc.env:MB_SECRET}}", "run.name=${..data.val}"],
}


@pytest.mark.parametrize("form", HIDDEN_ENV_FORMS, ids=list(HIDDEN_ENV_FORMS))
def test_every_interpolation_form_is_followed_to_the_environment(tmp_path, monkeypatch, form):
    from omegaconf import OmegaConf

    monkeypatch.setenv("MB_SECRET", SECRET)
    monkeypatch.delenv("MB_UNSET", raising=False)
    r = write(tmp_path / "r.yaml", "data:\n  train: x\n  local_cache: ${oc.env:MB_SECRET}\n")
    with pytest.raises(ConfigError) as e:
        load_config(r, [f"run.dir={tmp_path}/run", *HIDDEN_ENV_FORMS[form]])
    msg = str(e.value)
    assert "takes its value from an environment variable" in msg and "override" in msg, msg
    assert SECRET not in msg
    # The probe never stays installed: oc.env reads the environment again afterwards.
    assert OmegaConf.create({"v": "${oc.env:MB_SECRET}"}).v == SECRET


def test_hidden_environment_in_a_recipe_names_the_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MB_SECRET", SECRET)
    run_dir = tmp_path / "run"
    r = write(
        tmp_path / "r.yaml",
        f"data:\n  train: x\n  local_cache: ${{oc.env:MB_SECRET}}\nrun:\n  dir: {run_dir}\n"
        "  name: job-${oc.select:data.local_cache}\n",
    )
    with pytest.raises(ConfigError, match=r"run\.name: takes its value .*r\.yaml:6"):
        load_config(r)
    for command in (["train", str(r), "--dry-run"], ["submit", str(r)]):
        proc = subprocess.run(
            [sys.executable, "-m", "mbtrain.cli.main", *command], capture_output=True, text=True
        )
        assert proc.returncode == 2 and "run.name: takes its value" in proc.stderr, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
    assert not run_dir.exists()


def test_environment_still_feeds_paths_and_numbers_through_any_form(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    monkeypatch.setenv("MB_STEPS", "7")
    r = write(
        tmp_path / "r.yaml",
        "data:\n  train: ${oc.select:data.local_cache}/train\n  local_cache: ${oc.env:SCRATCH}\n"
        "run:\n  name: exp-${oc.select:logging.project}\n  dir: ${..data.local_cache}/runs/${.name}\n"
        "train:\n  steps: ${oc.decode:${oc.env:MB_STEPS}}\n",
    )
    cfg = load_config(r, ["logging.project=proj", "checkpoint.resume=${oc.env:MB_NONE,auto}"])
    assert cfg.run.name == "exp-proj" and cfg.run.dir == "/scratch/me/runs/exp-proj"
    assert cfg.data.train == "/scratch/me/train" and cfg.train.steps == 7
    assert cfg.checkpoint.resume == "auto"
