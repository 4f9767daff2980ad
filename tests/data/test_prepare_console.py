"""What `mbtrain prepare` prints: one-line errors for a bad corpus YAML, and, when stderr is
not a terminal (a Slurm log, a pipe), plain progress lines with no terminal escape codes."""

from __future__ import annotations

import io

import pytest

from mbtrain.cli.main import main
from mbtrain.data import preparation


def run_cli(capfd, *argv: str) -> tuple[int, str]:
    code = main(["prepare", *argv])
    return code, capfd.readouterr().err


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("inputs: [a.txt\nseq_len: 64\n", 2, "not valid YAML"),
        ("seq_len: 64\n  out: x\n", 2, "not valid YAML"),
        ("seq_len: 64\ninputs: !!python/object/apply:os.system ['touch {hit}']\n", 2,
         "!!python/object/apply:os.system is not allowed; a corpus file holds plain data only"),
        ("!!python/name:os.system\n", 1, "!!python/name:os.system is not allowed"),
    ],
)  # fmt: skip
def test_bad_corpus_yaml_is_one_line_with_file_and_line(tmp_path, capfd, text, line, what):
    y = tmp_path / "c.yaml"
    y.write_text(text.format(hit=tmp_path / "hit"))
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"mbtrain prepare: error: {y}:{line}: {what}"), err
    assert not (tmp_path / "hit").exists()  # the tag built nothing


def test_corpus_values_of_the_wrong_type_are_listed_at_once(tmp_path, capfd):
    y = tmp_path / "c.yaml"
    y.write_text("inputs: some/dir\nseq_len: long\npack: 1\nval_fraction: 0\n")
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    for problem in (
        "inputs: a list of strings, got 'some/dir'",
        "seq_len: an integer, got 'long'",
        "pack: true or false, got 1",
    ):
        assert problem in err, err
    assert "val_fraction" not in err  # an int where a float is expected is fine


def test_corpus_that_is_not_a_mapping(tmp_path, capfd):
    y = tmp_path / "c.yaml"
    y.write_text("- a.txt\n- b.txt\n")
    code, err = run_cli(capfd, "--corpus", str(y), "--out", str(tmp_path / "o"))
    assert code == 2 and "a corpus file is a mapping of prepare settings" in err, err


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
    progress = preparation.Progress(2_000_000, enabled=True, stream=stream, interval=0.0)
    progress.advance(500_000)
    progress.advance(500_000)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in stream.getvalue()
    assert lines[-1].startswith("prepare: read 1.0 MB in "), lines
    assert " MB/s) of 2.0 MB (50%)" in lines[-1], lines


def test_no_progress_prints_nothing():
    stream = io.StringIO()
    progress = preparation.Progress(1000, enabled=False, stream=stream, interval=0.0)
    progress.advance(1000)
    progress.close()
    assert stream.getvalue() == ""
