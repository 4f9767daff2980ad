"""`make demo`: the whole path on one CPU, on a real corpus, in a few minutes.

1. prepare the Python standard library's own sources (present on every machine) into an
   MDS dataset (skipped when already complete),
2. train the tiny MegaByte recipe through DeepSpeed (resumes if interrupted),
3. score every byte of the held-out files and print it beside gzip -9, bzip2 -9 and xz -9e
   on the same bytes (each file alone, as the model scores them, and all as one stream), and
   say plainly which it beats and which it does not,
4. print a generated sample and where the run directory, metrics and checkpoint are.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def prepare_corpus(out: Path, seq_len: int) -> None:
    from mbtrain.data import PrepareConfig, prepare

    stdlib = sysconfig.get_paths()["stdlib"]
    cfg = PrepareConfig(
        inputs=[f"{stdlib}/**/*.py"],
        exclude=["site-packages/**", "dist-packages/**", "test/**", "idlelib/**"],
        out=str(out),
        seq_len=seq_len,
        val_fraction=0.05,
        workers=1,
        progress=sys.stderr.isatty(),
    )
    t0 = time.perf_counter()
    result = prepare(cfg)
    print(f"[demo] {result.summary()} ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    from mbtrain.cli.logs import setup_logging
    from mbtrain.errors import MbtrainError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of recipes/demo.yaml")
    args = parser.parse_args(argv)
    setup_logging()  # the trainer's step, eval and checkpoint lines, as `mbtrain train` shows
    try:
        return run(args.overrides)
    except MbtrainError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return e.exit_code


def verdict(bpb: float, per_file: dict[str, float], stream: dict[str, float]) -> str:
    """Where the model stands among the compressors, said plainly (per file is how the model
    scores the files; one stream lets a compressor reuse what it saw in earlier files)."""
    beaten = [n for n, v in per_file.items() if bpb < v]
    missed = [n for n, v in per_file.items() if bpb >= v]
    if not beaten:
        return "below none of the compressors per file: train longer (train.steps=...)"
    text = f"below {', '.join(beaten)} per file"
    if missed:
        text += f", NOT below {', '.join(missed)} per file (train longer to get there)"
    below_stream = [n for n, v in stream.items() if bpb < v]
    text += (
        f"; below {', '.join(below_stream)} as one stream"
        if below_stream
        else "; below none as one stream"
    )
    return text


def run(overrides: list[str]) -> int:
    from mbtrain.train.run_config import load_config

    cfg = load_config(RECIPE, overrides)
    data_root = Path(cfg.data.train).parent
    print(f"[demo] 1/4 preparing the corpus into {data_root}", flush=True)
    prepare_corpus(data_root, cfg.model.seq_len)

    print("[demo] 2/4 training (DeepSpeed, CPU, fp32)", flush=True)
    from mbtrain.train.loop import train

    result = train(cfg)

    print("[demo] 3/4 evaluating on held-out files (every byte of them)", flush=True)
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.inference.evaluate import evaluate_model
    from mbtrain.model import generate

    model = load_model(result.run_dir)
    res = evaluate_model(model, [cfg.data.val], modes=("sliding",), batch_size=32, progress=False)
    bpb = res["modes"]["sliding"]
    print(
        f"[demo] bits per byte on {res['bytes']:,} held-out bytes ({res['documents']} whole files):"
    )
    print(f"[demo]   {'MegaByte (this run, sliding windows)':<40} {bpb:.3f}")
    per_file, stream = res["compressors_per_document"], res["compressors"]
    for name in per_file:
        print(f"[demo]   {name + ', each file on its own':<40} {per_file[name]:.3f}")
    for name in stream:
        print(f"[demo]   {name + ', all files as one stream':<40} {stream[name]:.3f}")
    print(f"[demo]   the model is {verdict(bpb, per_file, stream)}", flush=True)

    print("[demo] 4/4 a generated sample (prompt 'def '):", flush=True)
    sample = bytes(generate(model, b"def ", max_bytes=300, temperature=0.7, top_k=20, seed=0))
    print("-" * 60)
    print(("def " + sample.decode("utf-8", errors="replace")).rstrip())
    print("-" * 60)
    run_dir = result.run_dir
    print(f"[demo] run directory: {run_dir}")
    print(f"[demo] metrics:       {run_dir / 'metrics.jsonl'}")
    print(f"[demo] checkpoint:    {result.checkpoint}")
    print(f"[demo] export:        {run_dir / 'export'} (safetensors, loadable without DeepSpeed)")
    print(f"[demo] next: .venv/bin/mbtrain plot {run_dir} -o {run_dir}/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
