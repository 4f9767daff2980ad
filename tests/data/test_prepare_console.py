"""What `mbtrain prepare` prints: errors of a bad corpus YAML or `--cluster` setting, each
naming its file:line or flag; and, when stderr is not a terminal (a Slurm log, a pipe), plain
progress lines with no terminal escape codes."""

from __future__ import annotations

import io

import pytest

from mbtrain.cli.main import main
from mbtrain.data.progress import Progress


def run_cli(capfd, *argv: str) -> tuple[int, str]:
    code = main(["prepare", *argv])
    return code, capfd.readouterr().err


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("inputs: [a.txt\nseq_len: 64\n", 2, "not valid YAML"),
        ("seq_len: 64\n  out: x\n", 2, "not valid YAML"),
        ("seq_len: 64\ninputs: !!python/object/apply:os.system ['touch {hit}']\n", 2,
         "inputs: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
        ("!!python/name:os.system\n", 1, "a corpus definition must be a mapping of keys"),
    ],
)  # fmt: skip
def test_bad_corpus_yaml_is_one_line_with_file_and_line(tmp_path, capfd, text, line, what):
    y = tmp_path / "c.yaml"
    y.write_text(text.format(hit=tmp_path / "hit"))
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"mbtrain prepare: error: {y}:{line}: {what}"), err
    assert not (tmp_path / "hit").exists()  # the tag built nothing


def test_corpus_problems_are_listed_at_once_with_file_line_and_nearest_key(tmp_path, capfd):
    y = tmp_path / "c.yaml"
    y.write_text("inputs: some/dir\nseq_len: long\npack: 1\nval_fraction: 0\nsq_len: 3\nnmae: x\n")
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("mbtrain prepare: error: invalid prepare config (5 "), err
    for problem in (
        f"inputs: expected list[str], got 'some/dir' ({y}:1)",
        f"seq_len: expected int, got 'long' ({y}:2)",
        f"pack: expected bool, got 1 ({y}:3)",
        f"sq_len: unknown key; did you mean 'seq_len'? ({y}:5)",
        f"nmae: unknown key; did you mean 'name'? ({y}:6)",
    ):
        assert f"\n  - {problem}\n" in err, err
    assert "val_fraction" not in err  # an int where a float is expected is fine


def test_corpus_that_is_not_a_mapping(tmp_path, capfd):
    y = tmp_path / "c.yaml"
    y.write_text("- a.txt\n- b.txt\n")
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{y}:1: a corpus definition must be a mapping of keys" in err, err


def test_corpus_placeholders_expand_and_unknown_ones_name_the_line(tmp_path, capfd, monkeypatch):
    from mbtrain.data.corpus import load_corpus

    monkeypatch.setenv("MBTRAIN_CORPORA", str(tmp_path / "corpora"))
    y = tmp_path / "c.yaml"
    y.write_text("name: t\nout: o\ninputs: ['{corpora}/text', 'a{{b}}']\n")
    assert load_corpus(y) == {"inputs": [str(tmp_path / "corpora" / "text"), "a{b}"], "out": "o"}
    y.write_text("name: t\nout: o\ninputs:\n  - '{corpus}/text'\n")
    code, err = run_cli(capfd, "--corpus", str(y))
    assert code == 2 and f"{y}:3: inputs: '{{corpus}}/text': {{corpus}} is not a placeholder" in err


def test_command_line_flags_override_the_corpus_file(tmp_path, capfd):
    import argparse

    from mbtrain.cli.prepare import add_prepare_arguments, config_from_args

    y = tmp_path / "c.yaml"
    y.write_text("name: t\ninputs: [a, b]\nout: o\nseq_len: 64\nexclude: [x]\n")
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    cfg = config_from_args(parser.parse_args(["c", "--corpus", str(y), "--seq-len", "32", "--pad"]))
    assert (cfg.inputs, cfg.out, cfg.seq_len, cfg.exclude, cfg.pack) == (
        ["c"],
        "o",
        32,
        ["x"],
        False,
    )
    assert not hasattr(cfg, "name")  # a PrepareConfig, without the corpus' own keys


def test_cluster_settings_are_overrides_of_the_cluster_section():
    from mbtrain.cli.prepare import jobs_cluster_config
    from mbtrain.errors import ConfigError

    c = jobs_cluster_config(
        ["time=00:30:00", "cluster.partition=cpu", "sbatch_extra=--exclusive"], 4
    )
    assert (c.time, c.partition, c.sbatch_extra, c.cpus_per_task) == (
        "00:30:00", "cpu", ["--exclusive"], 4,
    )  # fmt: skip
    assert jobs_cluster_config(["cpus_per_task=2"], 4).cpus_per_task == 2
    with pytest.raises(ConfigError) as e:
        jobs_cluster_config(["tme=1", "nodes=abc"], 1)
    assert "cluster.tme: unknown key; did you mean 'cluster.time'? (--cluster 'tme=1')" in str(
        e.value
    )
    assert "cluster.nodes: expected int, got 'abc' (--cluster 'nodes=abc')" in str(e.value)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        jobs_cluster_config(["bogus"], 1)


def test_console_without_a_terminal_has_no_escape_codes(tmp_path, capfd):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_bytes(b"plain text " * (200 + i))
    # capfd: stderr is a file here, as in a Slurm log; workers write to the same descriptor.
    code, err = run_cli(capfd, str(src), "--out", str(tmp_path / "o"), "--workers", "2")
    assert code == 0, err
    assert "\x1b" not in err and "\r" not in err and "%|" not in err, repr(err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("read 8.9 kB in ") and last.endswith(" MB/s)"), err


def test_plain_progress_lines_say_how_far_and_how_fast():
    stream = io.StringIO()
    progress = Progress(2_000_000, enabled=True, stream=stream, interval=0.0)
    progress.advance(500_000)
    progress.advance(500_000)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in stream.getvalue()
    assert lines[-1].startswith("prepare: read 1.0 MB in "), lines
    assert " MB/s) of 2.0 MB (50%)" in lines[-1], lines


def test_no_progress_prints_nothing():
    stream = io.StringIO()
    progress = Progress(1000, enabled=False, stream=stream, interval=0.0)
    progress.advance(1000)
    progress.close()
    assert stream.getvalue() == ""
