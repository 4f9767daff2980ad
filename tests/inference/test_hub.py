"""Exports as Hugging Face Hub repos: `MegaByte.from_pretrained`, transformers' AutoModel with
trust_remote_code, save_pretrained round trips, the model card, old exports.

A tiny MegaByte is trained a few dozen steps here with plain torch (no DeepSpeed) and written
as a run's export with the run's record (data, validation, eval.json); the slow test at the end
does the same through `mbtrain train`, `mbtrain eval` and `mbtrain export`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mbtrain
from mbtrain.checkpoint.export import load_exported, strip_prefix, write_export
from mbtrain.checkpoint.hub import is_hub_id
from mbtrain.checkpoint.hub_files import run_record
from mbtrain.errors import CheckpointError
from mbtrain.inference.evaluate import evaluate_model
from mbtrain.model import ModelConfig, build_model
from mbtrain.model import score_bytes as model_score_bytes
from tests.support.launch import REPO, run

STEPS = 40
MODES = ("basic", "sliding", "strided")
TEXT = Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py"


def train_tiny(cfg: ModelConfig, steps: int = STEPS) -> torch.nn.Module:
    """A tiny model after `steps` Adam steps on real Python source (seconds on CPU)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    data = torch.tensor(list(TEXT.read_bytes()), dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - cfg.seq_len, (8,), generator=gen)
        x = torch.stack([data[s : s + cfg.seq_len] for s in starts])
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path, dict]:
    """(model, its run's export dir, the eval file, the eval result) for a tiny trained run:
    config.yaml and metrics.jsonl as a run has them, eval.json as `mbtrain eval` writes it."""
    root = tmp_path_factory.mktemp("hub")
    model = train_tiny(ModelConfig.tiny())
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        f"data:\n  train: {root}/data/train\n  val: {root}/data/val\n"
    )
    rows = [{"step": 20, "val_bpb": 5.5}, {"step": STEPS, "val_bpb": 4.25}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = root / "eval.txt"
    data.write_bytes(TEXT.read_bytes()[:3000])
    result = evaluate_model(model, [str(data)], modes=MODES, progress=False)
    (run_dir / "eval.json").write_text(json.dumps({**result, "data": [str(data)]}))
    marker = {"dataset": {"train": [{"fingerprint": "0123456789abcdef"}]}}
    record = run_record(run_dir, STEPS, marker)
    export = write_export(
        strip_prefix(model.state_dict()), model.cfg, run_dir / "export", {"step": STEPS, **record}
    )
    return model, export, data, result


def test_an_export_is_a_hub_repo(trained):
    _, export, _, _ = trained
    assert sorted(p.name for p in export.iterdir()) == [
        "README.md",
        "config.json",
        "model.json",
        "model.safetensors",
        "modeling_mbtrain.py",
    ]
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "mbtrain" and config["architectures"] == ["MegaByte"]
    assert config["auto_map"] == {
        "AutoConfig": "modeling_mbtrain.MbtrainConfig",
        "AutoModel": "modeling_mbtrain.MegaByte",
    }
    model_json = json.loads((export / "model.json").read_text())
    assert {k: config[k] for k in model_json["model"]} == model_json["model"]
    assert model_json["step"] == STEPS


def test_from_pretrained_scores_what_eval_scores_on_the_original(trained):
    model, export, data, result = trained
    hub = mbtrain.MegaByte.from_pretrained(export)
    assert type(hub) is mbtrain.MegaByte and not hub.training
    assert isinstance(hub, type(model))  # mbtrain.model.MegaByte, with the Hub's verbs
    for mode in MODES:
        score = mbtrain.score_bytes(hub, data, mode=mode)
        assert abs(score.bpb - result["modes"][mode]) < 1e-6, mode
        assert score.bytes == result["bytes"] and score.documents == 1
    raw = data.read_bytes()
    for mode in MODES:
        want = model_score_bytes(model, raw, 64, mode=mode).bpb
        assert abs(model_score_bytes(hub, raw, 64, mode=mode).bpb - want) < 1e-6
    x = torch.randint(0, 256, (2, 64))
    torch.testing.assert_close(hub(x), model(x), rtol=0, atol=0)
    # A run directory reads its current export the same way.
    loaded = mbtrain.load_model(export.parent)
    assert type(loaded) is mbtrain.MegaByte and loaded.export_meta["step"] == STEPS


AUTO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModel
    import mbtrain

    export, data = sys.argv[1], open(sys.argv[2], "rb").read()
    auto = AutoModel.from_pretrained(export, trust_remote_code=True)
    hub = mbtrain.MegaByte.from_pretrained(export)
    out = {"auto_type": [c.__name__ for c in type(auto).__mro__[:3]],
           "is_megabyte": isinstance(auto, mbtrain.MegaByte), "training": auto.training}
    for name, model in (("auto", auto), ("hub", hub)):
        out[name] = {m: mbtrain.score_bytes(model, data, mode=m).bpb
                     for m in ("basic", "sliding", "strided")}
    print(json.dumps(out))
    """
)


def offline_env(tmp_path: Path) -> dict:
    """No network and a private cache: a local export must load with nothing else."""
    hf = tmp_path / "hf"
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(hf),
        "HF_MODULES_CACHE": str(hf / "modules"),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
    }


def test_transformers_automodel_loads_it_offline_and_scores_the_same(trained, tmp_path):
    _, export, data, result = trained
    proc = subprocess.run(
        [sys.executable, "-c", AUTO_SCRIPT, str(export), str(data)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=offline_env(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["auto_type"][0] == "MegaByte" and out["is_megabyte"] and not out["training"]
    for name in ("auto", "hub"):
        for mode in MODES:
            assert abs(out[name][mode] - result["modes"][mode]) < 1e-6, (name, mode)
    # transformers copied the repo's modeling file into its (private) modules cache.
    assert list((tmp_path / "hf" / "modules").rglob("modeling_mbtrain.py"))


def test_the_model_card_holds_the_run_and_its_numbers(trained):
    from huggingface_hub import ModelCard

    _, export, data, result = trained
    card = ModelCard.load(export / "README.md")
    assert card.data.library_name == "mbtrain"
    assert "megabyte" in card.data.tags and card.data.pipeline_tag == "text-generation"
    text = card.text
    assert f"Steps: {STEPS}" in text
    assert f"`{export.parent.parent}/data/train`" in text and "0123456789abcdef" in text
    assert "4.2500 bits per byte (step 40)" in text  # the last validation in metrics.jsonl
    assert f"{result['bytes']:,} bytes" in text and str(data) in text
    for mode, bpb in result["modes"].items():
        assert f"this model ({mode} windows)" in text and f"{bpb:.4f}" in text
    for name, bpb in result["compressors"].items():
        assert f"| {name} | {bpb:.4f}" in text
    assert "Not evaluated" not in text


def test_save_pretrained_round_trips(trained, tmp_path):
    model, export, _, _ = trained
    hub = mbtrain.MegaByte.from_pretrained(export)
    hub.save_pretrained(tmp_path / "again")
    again = tmp_path / "again"
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in export.iterdir())
    for name in ("README.md", "config.json", "model.json", "modeling_mbtrain.py"):
        assert (again / name).read_text() == (export / name).read_text(), name
    a, b = load_file(str(export / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reloaded = mbtrain.MegaByte.from_pretrained(again)
    x = torch.randint(0, 256, (2, 64))
    torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    # Saving over an earlier export replaces it; over anything else is refused, untouched.
    hub.save_pretrained(again)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an mbtrain export"):
        hub.save_pretrained(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_fresh_model_saves_with_a_card_that_says_not_evaluated(tmp_path):
    model = mbtrain.MegaByte(ModelConfig.tiny())
    model.save_pretrained(tmp_path / "fresh")
    text = (tmp_path / "fresh" / "README.md").read_text()
    assert "Not evaluated" in text and "Steps: not recorded" in text
    assert mbtrain.MegaByte.from_pretrained(tmp_path / "fresh").cfg == model.cfg


def test_the_baseline_is_a_hub_model_too(tmp_path):
    cfg = ModelConfig.tiny(arch="transformer")
    model = train_tiny(cfg, steps=5)
    out = write_export(strip_prefix(model.state_dict()), cfg, tmp_path / "exp", {"step": 5})
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_mbtrain.ByteTransformer"
    loaded = mbtrain.load_model(out)
    assert type(loaded) is mbtrain.ByteTransformer
    hub = mbtrain.ByteTransformer.from_pretrained(out)
    data = TEXT.read_bytes()[:500]
    want = model_score_bytes(model, data, 64, mode="sliding").bpb
    assert abs(mbtrain.score_bytes(hub, data).bpb - want) < 1e-6
    with pytest.raises(CheckpointError, match=r"arch 'transformer'.*mbtrain\.ByteTransformer"):
        mbtrain.MegaByte.from_pretrained(out)


def test_old_exports_and_config_only_repos_load(trained, tmp_path):
    import shutil

    model, export, _, _ = trained
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.json", "model.safetensors"):  # an export from before the Hub files
        shutil.copy(export / name, old / name)
    x = torch.randint(0, 256, (1, 64))
    for loaded in (load_exported(old), mbtrain.MegaByte.from_pretrained(old)):
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    hub_only = tmp_path / "hub_only"  # a Hub repo uploaded without model.json
    hub_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(export / name, hub_only / name)
    torch.testing.assert_close(mbtrain.load_model(hub_only)(x), model(x), rtol=0, atol=0)


def test_config_json_that_disagrees_with_model_json_is_refused(trained, tmp_path):
    import shutil

    _, export, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(export, bad)
    config = json.loads((bad / "config.json").read_text())
    config["rope_theta"] = 500000.0
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json and model\.json disagree") as info:
        mbtrain.MegaByte.from_pretrained(bad)
    assert "rope_theta" in str(info.value) and "\n" not in str(info.value)
    config["model_type"] = "llama"
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.json").unlink()
    with pytest.raises(CheckpointError, match="not an mbtrain model"):
        load_exported(bad)


def test_which_paths_are_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert is_hub_id("someone/megabyte-demo")
    assert not is_hub_id("runs/demo")  # `runs/` is here: a local path, misspelled or not yet made
    assert not is_hub_id("runs")  # no owner
    assert not is_hub_id(str(tmp_path / "nope"))  # absolute
    assert not is_hub_id(Path("someone/megabyte-demo"))  # a Path is always local
    assert not is_hub_id("../x")
    (tmp_path / "someone" / "megabyte-demo").mkdir(parents=True)
    assert not is_hub_id("someone/megabyte-demo")  # it exists here


def test_a_hub_id_that_cannot_be_fetched_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "generate", "nobody-mbtrain/no-such-model"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=offline_env(tmp_path),
        timeout=300,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "nobody-mbtrain/no-such-model" in err and "Hugging Face Hub" in err


@pytest.mark.slow
def test_training_eval_and_export_make_a_hub_repo(tiny_args, tiny_dataset, tmp_path):
    """The real path: `mbtrain train` writes export/ with the run's record, `mbtrain eval`
    writes eval.json, `mbtrain export` puts its numbers on the card; the Hub class loads it
    and scores what eval scored on the checkpoint."""
    run_dir = tmp_path / "run"
    run(1, [*tiny_args, "train.steps=4", f"run.dir={run_dir}"], tmp_path / "logs")
    card = (run_dir / "export" / "README.md").read_text()
    marker = next((run_dir / "checkpoints").glob("step*/mbtrain_complete.json"))
    fingerprint = json.loads(marker.read_text())["dataset"]["train"][0]["fingerprint"]
    assert "Steps: 4" in card and fingerprint in card and f"{tiny_dataset}/train" in card
    assert "Not evaluated" in card  # eval.json comes after training
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    cli = [sys.executable, "-m", "mbtrain.cli.main"]
    subprocess.run(
        [*cli, "eval", str(run_dir), f"{tiny_dataset}/val", "--max-bytes", "3000", "--mode", "basic",
         "-o", str(run_dir / "eval.json")],
        check=True, cwd=REPO, env=env, capture_output=True,
    )  # fmt: skip
    result = json.loads((run_dir / "eval.json").read_text())
    out = tmp_path / "exported"
    subprocess.run([*cli, "export", str(run_dir), "--out", str(out)],
                   check=True, cwd=REPO, env=env, capture_output=True)  # fmt: skip
    card = (out / "README.md").read_text()
    assert "Not evaluated" not in card and f"{result['modes']['basic']:.4f}" in card
    assert f"{result['compressors']['gzip -9']:.4f}" in card and fingerprint in card
    hub = mbtrain.MegaByte.from_pretrained(out)
    score = mbtrain.score_bytes(hub, f"{tiny_dataset}/val", mode="basic", max_bytes=3000)
    assert abs(score.bpb - result["modes"]["basic"]) < 1e-6
