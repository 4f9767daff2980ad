"""One rank of a distributed test: `worker.py <scenario> <out_dir> <json args>`.

Scenarios build the library's training pieces (`build_engine`, `step.train_step`,
`Evaluator`, `Checkpointer`: see `Harness`) on fixed synthetic batches and compare with a plain
single-process reference (torch AdamW, the same clipping) from the same seed. Rank 0 writes
result.json; a failed assertion exits non-zero, which the launcher reports with the logs.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch
import torch.distributed as dist

from mbtrain.train.runner import StepRunner

torch.set_num_threads(1)

TOL = 1e-5
STEPS = 3


def make_cfg(
    run_dir,
    tensor=1,
    pipeline=1,
    zero=0,
    accum=1,
    split_local=True,
    dropout=0.0,
    mbs=2,
    arch="megabyte",
    context=1,
    ring=1,
    pos="rope",
    local_context=0,
    checkpointing=False,
    local_chunk=0,
    precision="fp32",
):
    from mbtrain.train.run_config import load_config

    return load_config(
        "recipes/tiny_cpu.yaml",
        [
            f"run.dir={run_dir}",
            f"model.arch={arch}",
            "model.seq_len=32",
            "model.patch_size=4",
            "model.global_dim=8",
            "model.global_layers=2",
            "model.global_heads=4",
            "model.local_dim=16",
            "model.local_layers=1",
            "model.local_heads=2",
            "model.dim=16",
            "model.layers=2",
            "model.heads=4",
            f"model.dropout={dropout}",
            "model.init_std=0.2",
            f"parallel.tensor={tensor}",
            f"parallel.pipeline={pipeline}",
            f"model.doc_mask={'false' if pipeline > 1 else 'true'}",
            f"parallel.context={context}",
            f"parallel.context_ring={ring}",
            f"model.pos={pos}",
            f"model.local_context={local_context}",
            f"model.activation_checkpointing={str(checkpointing).lower()}",
            f"model.local_chunk={local_chunk}",
            f"train.precision={precision}",
            f"parallel.zero_stage={zero}",
            f"parallel.split_local={str(split_local).lower()}",
            f"train.micro_batch_size={mbs}",
            f"train.grad_accum={accum}",
            "train.steps=10",
            "train.eval_batches=2",
            "optim.lr=1e-2",
            "optim.warmup_steps=2",
            "optim.grad_clip=0.5",
            "checkpoint.keep=5",
        ],
    )


DOCS = False
"""Batches with two documents in row 0 (patch-aligned, as the loader lays them out)."""


def batch(step: int, micro: int, dp: int, mbs: int = 2, t: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100_000 * step + 100 * micro + dp)
    x = torch.randint(0, 256, (mbs, t), generator=g)
    mask = torch.ones(mbs, t, dtype=torch.bool)
    mask[0, : 3 + step % 4] = False  # masked positions change the per-rank counts
    out = {"x": x, "mask": mask}
    if DOCS:
        seg = torch.zeros(mbs, t, dtype=torch.long)
        seg[0, 13:16], seg[0, 16:] = -1, 1  # doc 0, 3 bytes of padding, doc 1 from byte 16
        out["mask"] = mask & (seg >= 0)
        out["segment_ids"] = seg
    return out


def rank_batches(cfg, dp_rank: int, first: int, steps: int, emulate_dp: bool = False) -> list[dict]:
    """This rank's micro-batches; with emulate_dp, one process's accumulation steps stand for
    the data-parallel ranks of a layout with grad_accum=1 (same global batch and gradient)."""
    accum = cfg.train.grad_accum
    mbs = cfg.train.micro_batch_size
    if emulate_dp:
        return [batch(s, 0, m, mbs) for s in range(first, first + steps) for m in range(accum)]
    return [batch(s, m, dp_rank, mbs) for s in range(first, first + steps) for m in range(accum)]


# -- reference ----------------------------------------------------------------------------------


class Reference:
    """The plain model, trained in one process on the union of all data-parallel batches."""

    def __init__(self, cfg, dp_size: int):
        from mbtrain.model import build_model
        from mbtrain.train.module import LossModule
        from mbtrain.train.optim import build_optimizer, build_scheduler
        from mbtrain.train.rng import seed_everything

        self.cfg, self.dp_size = cfg, dp_size
        seed_everything(cfg.train.seed)
        self.model = build_model(cfg.model)
        self.opt = build_optimizer(LossModule(self.model), cfg.optim)
        self.sched = build_scheduler(self.opt, cfg.optim, cfg.train.steps)
        self.step_no = 0

    def loss(self, step: int, micro: int) -> torch.Tensor:
        mbs = self.cfg.train.micro_batch_size
        batches = [batch(step, micro, d, mbs) for d in range(self.dp_size)]
        losses = [self.model.loss(b["x"], b["mask"], b.get("segment_ids")) for b in batches]
        return sum(losses) / self.dp_size  # DeepSpeed averages gradients over replicas

    def step(self, grads: bool = False):
        accum = self.cfg.train.grad_accum
        total = 0.0
        for m in range(accum):
            loss = self.loss(self.step_no, m)
            (loss / accum).backward()
            total += float(loss)
        g = {n: p.grad.clone() for n, p in self.model.named_parameters()} if grads else None
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_no += 1
        return total / accum, g

    @torch.no_grad()
    def eval_loss(self, step: int) -> float:
        return float(self.loss(step, 0))

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


# -- trainer --------------------------------------------------------------------------------------


class Harness(StepRunner):
    """The library's training pieces on fixed batches (public API only): the engine and one
    step (`StepRunner`), evaluation (`Evaluator`) and saving (`Checkpointer`), without a run
    directory's lock, loaders or monitoring."""

    def __init__(self, cfg, batches: list[dict] | None = None):
        from mbtrain.checkpoint.manager import CheckpointManager
        from mbtrain.train.checkpointer import Checkpointer

        super().__init__(cfg)
        self.engine, self.groups, self.dp_rank = self.te.engine, self.te.groups, self.te.dp_rank
        self.policy.say = print
        self.ckpt = CheckpointManager(
            Path(cfg.run.dir) / "checkpoints", cfg.checkpoint.keep, self.env.rank,
            self.env.world_size,
        )  # fmt: skip
        self.checkpointer = Checkpointer(
            self.te, self.ckpt, 0, self.state, None, {}, {"train": []}, print
        )
        self.val_loader = None
        self.feed(batches or [])

    def inputs(self, batch: dict):
        from mbtrain.train.batches import to_inputs

        return to_inputs(batch, self.te.device, self.cfg.model.doc_mask)

    def all_reduce(self, values: list[float]) -> list[float]:
        return self.te.all_reduce(values)

    def train_step(self) -> dict:
        return self.step()

    def evaluate(self) -> dict | None:
        from mbtrain.train.evaluation import Evaluator

        ev = Evaluator(self.te, self.cfg.train, self.val_loader, self.cfg.model.doc_mask)
        return ev.evaluate()

    def save_checkpoint(self, reason: str) -> Path:
        return self.checkpointer.save(reason)


def build_trainer(cfg, batches: list[dict] | None = None) -> Harness:
    from deepspeed.utils import groups

    # Several engines in one process: DeepSpeed keeps the last engine's mpu in a module
    # global, which a later engine without an mpu would pick up.
    groups.mpu = None
    return Harness(cfg, batches)


def feed(tr, batches: list[dict]) -> None:
    tr.feed(batches)


def full_state(tr) -> dict[str, torch.Tensor]:
    from mbtrain.parallel.gather import consolidated_state_dict, local_plain_state

    if not tr.layout.model_parallel_enabled:
        return local_plain_state(tr.engine, tr.cfg.model, tr.layout)
    state = consolidated_state_dict(tr.engine, tr.cfg.model, tr.layout, tr.groups)
    obj = [state]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def max_diff(a: dict, b: dict) -> tuple[float, str]:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:5]
    worst, where = 0.0, ""
    for k in a:
        d = float((a[k].float() - b[k].float()).abs().max())
        if d > worst:
            worst, where = d, k
    return worst, where


def full_grads(tr) -> dict[str, torch.Tensor]:
    """Gradients of the whole model after backward, before step, gathered (plain names)."""
    from deepspeed.utils import safe_get_full_grad

    from mbtrain.parallel.pipeline import plain_param_name
    from mbtrain.parallel.tensor import merge_shards

    mine = {}
    for n, p in tr.engine.module.named_parameters():
        g = safe_get_full_grad(p) if tr.cfg.parallel.zero_stage else p.grad
        mine[plain_param_name(n, False, 2)] = g.detach().float().cpu().clone()
    tp = tr.groups.get_tensor_model_parallel_rank()
    allg = [None] * dist.get_world_size()
    dist.all_gather_object(allg, (tp, mine))
    by = {}
    for r, part in allg:
        for k, v in part.items():
            by.setdefault(k, {})[r] = v
    return {k: merge_shards(k, [v[r] for r in sorted(v)]) for k, v in by.items()}


def replicated_equal(tr) -> float:
    """Largest difference of replicated parameters between tensor ranks."""
    worst = 0.0
    if tr.layout.zero_stage == 3:
        return worst  # partitioned: full_state compares the gathered weights instead
    group = tr.groups.get_tensor_model_parallel_group()
    size = tr.groups.get_tensor_model_parallel_world_size()
    for _, p in tr.engine.module.named_parameters():
        if getattr(p, "tensor_model_parallel", False):
            continue
        t = p.detach().float().contiguous()
        parts = [torch.empty_like(t) for _ in range(size)]
        dist.all_gather(parts, t, group=group)
        worst = max(worst, max(float((q - parts[0]).abs().max()) for q in parts))
    return worst


def destroy(tr) -> None:
    del tr.engine, tr.te


# -- scenarios ------------------------------------------------------------------------------------


def scenario_tp(out: Path, args: dict) -> dict:
    """TP=2 (x DP when world is larger) vs the reference, at several ZeRO stages."""
    res = {}
    tensor = args.get("tensor", 2)
    for zero, split in args["cases"]:
        cfg = make_cfg(out / f"tp_z{zero}", tensor=tensor, zero=zero, accum=2, split_local=split)
        dp = dist.get_world_size() // tensor
        ref = Reference(cfg, dp)
        ref_losses, ref_g = [], None
        for s in range(STEPS):
            loss, g = ref.step(grads=(s == 0))
            ref_losses.append(loss)
            ref_g = ref_g or g
        tr = build_trainer(cfg)
        dp_rank = tr.dp_rank
        # Step 1 by hand, to read the gradients before the update.
        accum = cfg.train.grad_accum
        loss0 = 0.0
        for m in range(accum):
            b = batch(0, m, dp_rank)
            loss = tr.engine(b["x"], b["mask"])
            loss0 += float(loss) / accum
            tr.engine.backward(loss)
            if m == accum - 1:
                grads = full_grads(tr)
            tr.engine.step()
        loss0 = tr.all_reduce([loss0])[0] / dist.get_world_size()
        feed(tr, rank_batches(cfg, dp_rank, 1, STEPS - 1))
        losses = [loss0] + [tr.train_step()["loss"] for _ in range(STEPS - 1)]
        gd, gwhere = max_diff(grads, ref_g)
        wd, wwhere = max_diff(full_state(tr), ref.state())
        rep = replicated_equal(tr)
        key = f"zero{zero}_split{int(split)}"
        res[key] = {
            "losses": losses,
            "ref": ref_losses,
            "grad_diff": gd,
            "grad_where": gwhere,
            "weight_diff": wd,
            "weight_where": wwhere,
            "replicated_diff": rep,
        }
        if args.get("export") and zero == args["cases"][-1][0]:
            res["export"] = check_export(tr, out)
    if args.get("dropout"):
        cfg = make_cfg(out / "tp_drop", tensor=tensor, zero=0, dropout=0.2)
        tr = build_trainer(cfg, rank_batches(cfg, 0, 0, 2))
        losses = [tr.train_step()["loss"] for _ in range(2)]
        res["dropout"] = {"replicated_diff": replicated_equal(tr), "losses": losses}
    return res


def scenario_cp(out: Path, args: dict) -> dict:
    """Context parallelism (x tensor x data, any ZeRO stage) vs the single-process reference:
    losses per step, gradients before the first update, weights after the last."""
    global DOCS
    res = {}
    for case in args["cases"]:
        case = dict(case)
        name = case.pop("name")
        DOCS = case.pop("docs", False)
        cfg = make_cfg(out / name, accum=2, **case)
        dp = dist.get_world_size() // (cfg.parallel.tensor * cfg.parallel.context)
        ref = Reference(cfg, dp)
        ref_losses, ref_g = [], None
        for s in range(STEPS):
            loss, g = ref.step(grads=(s == 0))
            ref_losses.append(loss)
            ref_g = ref_g or g
        tr = build_trainer(cfg)
        accum, loss0 = cfg.train.grad_accum, 0.0
        for m in range(accum):
            b = batch(0, m, tr.dp_rank)
            loss = tr.engine(*tr.inputs(b))
            loss0 += float(loss) / accum
            tr.engine.backward(loss)
            if m == accum - 1:
                grads = full_grads(tr)
            tr.engine.step()
        loss0 = tr.all_reduce([loss0])[0] / dist.get_world_size()
        feed(tr, rank_batches(cfg, tr.dp_rank, 1, STEPS - 1))
        losses = [loss0] + [tr.train_step()["loss"] for _ in range(STEPS - 1)]
        gd, gwhere = max_diff(grads, ref_g)
        wd, wwhere = max_diff(full_state(tr), ref.state())
        res[name] = {
            "losses": losses, "ref": ref_losses, "grad_diff": gd, "grad_where": gwhere,
            "weight_diff": wd, "weight_where": wwhere, "replicated_diff": replicated_equal(tr),
        }  # fmt: skip
        if cfg.parallel.zero_stage == 3:
            # The share of the weights this rank holds (what the dry-run estimate divides by).
            params = list(tr.engine.module.parameters())
            res[name]["held_fraction"] = sum(p.ds_tensor.numel() for p in params) / sum(
                p.ds_numel for p in params
            )
        if args.get("export") and name == args["export"]:
            res["export"] = check_export(tr, out / name)
        destroy(tr)
    return res


def scenario_cp_dropout(out: Path, args: dict) -> dict:
    """Dropout under context parallelism: the masks each span draws (the embedding dropout's
    zeros, gathered from both ranks), and the first loss with per-span streams and with the
    streams switched off (every span repeating one mask)."""
    import contextlib

    import mbtrain.parallel.context as context_mod

    res = {}
    for name, per_span in (("per_span", True), ("repeated", False)):
        cfg = make_cfg(out / name, context=2, dropout=0.3, zero=args.get("zero", 0))
        tr = build_trainer(cfg)
        masks = []
        hook = tr.engine.module.model.dropout.register_forward_hook(
            lambda m, i, o, masks=masks: masks.append((o == 0).flatten().float())
        )
        saved = context_mod.rank_stream
        if not per_span:
            context_mod.rank_stream = lambda *a: contextlib.nullcontext()
        feed(tr, rank_batches(cfg, tr.dp_rank, 0, 1))
        loss = tr.train_step()["loss"]
        context_mod.rank_stream = saved
        hook.remove()
        mine = masks[0]
        theirs = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(theirs, mine)
        res[name] = {
            "loss": loss,
            "masks_equal": bool(torch.equal(theirs[0], theirs[1])),
            "dropped": float(mine.mean()),
        }
        destroy(tr)
    return res


def check_export(tr, out: Path) -> dict:
    from mbtrain.checkpoint.export import export_from_engine, load_exported

    path = out / "export"
    export_from_engine(tr.engine, tr.cfg.model, tr.layout, tr.groups, path)
    x = batch(9, 0, 0)["x"]
    model = tr.engine.module.model
    model.eval()
    with torch.no_grad():
        live = model(x)
    model.train()
    if dist.get_rank() != 0:
        return {}
    exported = load_exported(path)
    with torch.no_grad():
        logits = exported(x)
    return {"logit_diff": float((logits - live).abs().max())}


def scenario_pp(out: Path, args: dict) -> dict:
    """PP=2 (x TP, x DP) vs the reference through train_step (train_batch) and evaluate."""
    res = {}
    tensor = args.get("tensor", 1)
    for zero in args["zeros"]:
        cfg = make_cfg(out / f"pp_z{zero}", tensor=tensor, pipeline=2, zero=zero, accum=2)
        dp = dist.get_world_size() // (2 * tensor)
        ref = Reference(cfg, dp)
        ref_losses = [ref.step()[0] for _ in range(STEPS)]
        counts = [float(batch(50 + i, 0, 0)["mask"].sum()) for i in range(2)]
        ref_eval = sum(ref.eval_loss(50 + i) * n for i, n in enumerate(counts)) / sum(counts)
        tr = build_trainer(cfg, rank_batches(cfg, 0, 0, 0))
        feed(tr, rank_batches(cfg, tr.dp_rank, 0, STEPS))
        losses = [tr.train_step()["loss"] for _ in range(STEPS)]
        tr.val_loader = [batch(50 + i, 0, tr.dp_rank) for i in range(2)]
        ev = tr.evaluate()
        wd, where = max_diff(full_state(tr), ref.state())
        res[f"zero{zero}"] = {
            "losses": losses,
            "ref": ref_losses,
            "weight_diff": wd,
            "where": where,
            "val_loss": ev["val_loss"],
            "ref_val": ref_eval,
        }
    return res


def scenario_nonfinite(out: Path, args: dict) -> dict:
    """A step whose loss is NaN (injected into the loss) is skipped with the weights untouched
    and the next step applies; under `stop` the run stops before the update. Cases are
    `[pipeline, zero]`: with a pipeline the loss reaches the loop only after `train_batch`."""
    from mbtrain.errors import MbtrainError

    class NanGrad(torch.autograd.Function):
        """Finite loss, non-finite gradients (what an overflow in backward looks like)."""

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    res = {}
    for pipeline, zero, kind in args["cases"]:
        cfg = make_cfg(out / f"nf_p{pipeline}_z{zero}", pipeline=pipeline, zero=zero, accum=2)
        cfg.train.on_nonfinite, cfg.train.max_nonfinite_skips = "skip", 5
        tr = build_trainer(cfg, rank_batches(cfg, 0, 0, 0))
        feed(tr, rank_batches(cfg, tr.dp_rank, 0, 6))
        owner = tr.engine.module.loss_fn.head if pipeline > 1 else tr.engine.module.model
        real = owner.loss

        def poisoned(*a, real=real, kind=kind):
            loss = real(*a)
            return NanGrad.apply(loss) if kind == "grad" else loss * float("nan")

        first = tr.train_step()
        before = full_state(tr)
        owner.loss = poisoned
        bad = tr.train_step()
        owner.loss = real
        after_skip = full_state(tr)
        good = tr.train_step()
        after_good = full_state(tr)
        tr.cfg.train.on_nonfinite = "stop"
        owner.loss = poisoned
        try:
            tr.train_step()
            stop_error = None
        except MbtrainError as e:
            stop_error = str(e)
        owner.loss = real
        after_stop = full_state(tr)
        res[f"pp{pipeline}_zero{zero}_{kind}"] = {
            "skipped": [first["skipped"], bad["skipped"], good["skipped"]],
            "good_loss": good["loss"],
            "skip_diff": max_diff(after_skip, before)[0],
            # Every parameter must move in the good step: a skip leaking into it (e.g. into
            # one of ZeRO's per-group optimizer calls) would freeze some of them.
            "good_moved": min(
                float((after_good[k] - after_skip[k]).abs().max()) for k in after_good
            ),
            "stop_error": stop_error,
            "stop_diff": max_diff(after_stop, after_good)[0],
        }
        destroy(tr)
    return res


def _train_and_save(cfg, steps_before: int, emulate_dp: bool = False) -> dict:
    """Train steps_before steps, save, then compute the next steps' losses in this layout."""
    from mbtrain.checkpoint.consolidate import checkpoint_state_dict

    tr = build_trainer(cfg)
    feed(tr, rank_batches(cfg, tr.dp_rank, 0, steps_before, emulate_dp))
    for _ in range(steps_before):
        tr.train_step()
    path = tr.save_checkpoint("test")
    live = full_state(tr)
    merged_diff = 0.0
    if dist.get_rank() == 0:  # what `mbtrain export` reads from this checkpoint
        merged, _ = checkpoint_state_dict(path.parent, path.name)
        merged_diff = max_diff(merged, live)[0]
    feed(tr, rank_batches(cfg, tr.dp_rank, steps_before, 2, emulate_dp))
    nxt = [tr.train_step()["loss"] for _ in range(2)]
    return {"path": str(path), "next": nxt, "merged_diff": merged_diff}


def scenario_save(out: Path, args: dict) -> dict:
    res = {}
    for name, layout in args["layouts"].items():
        layout = dict(layout)
        emulate = layout.pop("emulate_dp", False)
        cfg = make_cfg(out / name, **layout)
        res[name] = _train_and_save(cfg, 2, emulate)
    return res


def scenario_resume(out: Path, args: dict) -> dict:
    """Resume checkpoints of other layouts in this one: the next losses must match."""
    from mbtrain.checkpoint.paths import read_marker
    from mbtrain.checkpoint.reshard import load_resharded

    res = {}
    for name, case in args["cases"].items():
        layout = dict(case["layout"])
        emulate = layout.pop("emulate_dp", False)
        cfg = make_cfg(out / name, **layout)
        tr = build_trainer(cfg)
        path = Path(case["path"])
        info = read_marker(path)
        assert tr.layout.differs_from(info)
        client = load_resharded(
            tr.engine, path.parent, path.name, info, cfg.model, tr.layout, tr.groups, cfg.checkpoint
        )
        step = client["mbtrain"]["step"]
        feed(tr, rank_batches(cfg, tr.dp_rank, step, 2, emulate))
        losses = [tr.train_step()["loss"] for _ in range(2)]
        res[name] = {"losses": losses, "expected": case["next"], "step": step}
    return res


def scenario_universal(out: Path, args: dict) -> dict:
    """A TP=2 ZeRO-1 checkpoint with universal_checkpoint_info converts with ds_to_universal."""
    import argparse
    import dataclasses

    from deepspeed.checkpoint import ds_to_universal
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

    from mbtrain.checkpoint.shards import universal_checkpoint_info

    cfg = make_cfg(out / "uc", tensor=2, zero=1)
    tr = build_trainer(cfg, rank_batches(cfg, 0, 0, 1))
    tr.train_step()
    client = {UNIVERSAL_CHECKPOINT_INFO: universal_checkpoint_info(tr.engine.module)}
    marker = {"tensor": 2, "pipeline": 1, "data": 1, "zero_stage": 1}
    marker["model"] = dataclasses.asdict(cfg.model)
    path = tr.ckpt.save(tr.engine, 1, client, {}, marker)
    live = full_state(tr)
    worst = 0.0
    if dist.get_rank() == 0:
        uni = out / "universal"
        ds_to_universal.main(
            argparse.Namespace(
                input_folder=str(path),
                output_folder=str(uni),
                num_extract_workers=1,
                num_merge_workers=1,
                keep_temp_folder=False,
                strict=True,
                inject_missing_state=False,
            )
        )
        for name, ref in live.items():
            f = uni / "zero" / f"model.{name}" / "fp32.pt"
            if name == "head.weight" and not f.exists():
                continue  # tied to local_embed.weight (only when tie_local_embedding)
            got = torch.load(f, weights_only=False)["param"]
            worst = max(worst, float((got.float() - ref).abs().max()))
    return {"universal_diff": worst}


def scenario_save_resume(out: Path, args: dict) -> dict:
    """Both in one job (one start-up): resume `cases`, then save `layouts`."""
    return {"resumed": scenario_resume(out, args), "saved": scenario_save(out, args)}


SCENARIOS = {
    "tp": scenario_tp,
    "pp": scenario_pp,
    "nonfinite": scenario_nonfinite,
    "save": scenario_save,
    "resume": scenario_resume,
    "save_resume": scenario_save_resume,
    "universal": scenario_universal,
    "cp": scenario_cp,
    "cp_dropout": scenario_cp_dropout,
}


def main() -> None:
    scenario, out, args = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    from mbtrain.parallel.distributed import init_distributed

    init_distributed("cpu", "gloo")
    res = SCENARIOS[scenario](out, args)
    dist.barrier()
    if dist.get_rank() == 0:
        (out / "result.json").write_text(json.dumps(res, indent=1, default=float))
    dist.destroy_process_group()
    # DeepSpeed leaves threads behind at exit on CPU; leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    _ = math
