"""Map the environment that `srun` gives each task to the one `torch.distributed` reads.

Why not torchrun: under Slurm, `srun` already starts one process per rank on every node and
tells each its place (SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, the step's node list). A
second launcher would only add a rendezvous to get wrong. So each task translates:

    RANK             <- SLURM_PROCID
    WORLD_SIZE       <- SLURM_STEP_NUM_TASKS / SLURM_NTASKS
    LOCAL_RANK       <- SLURM_LOCALID
    LOCAL_WORLD_SIZE <- this node's entry of SLURM_STEP_TASKS_PER_NODE ("2(x3),1" -> 2,2,2,1)
    MASTER_ADDR      <- first host of the step's node list (rank 0 runs there)
    MASTER_PORT      <- 10000 + job_id % 50000 (same on every node, differs between jobs)
    OMP_NUM_THREADS  <- SLURM_CPUS_PER_TASK, else 1 (Slurm does not set it; torch would use
                        every core of the node in every rank)

Run as `python -m mbtrain.cluster.env CMD ARGS...` it applies the mapping and `exec`s the
command, so the batch script gives every training process the variables without the trainer
having to know it runs under Slurm. Variables already present are never overwritten (a
torchrun inside an allocation, or a user's own MASTER_PORT, win).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, MutableMapping

TORCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMP_NUM_THREADS",
)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: "a[1,2],b" -> ["a[1,2]", "b"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec: str, hostlist: str) -> list[str]:
    """ "01-03,7" -> ["01", "02", "03", "7"]; zero padding follows the lower bound."""
    out = []
    for item in spec.split(","):
        lo, sep, hi = item.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {item!r} in host list {hostlist!r}")
        if not sep:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in host list {hostlist!r}")
        width = len(lo)
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def parse_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm host list in pure Python, in Slurm's order.

    Handles "n1", "n[1-3,5]", "gpu-a[01-02]", several bracket groups ("r[1-2]n[1-2]" ->
    r1n1, r1n2, r2n1, r2n2) and comma-separated mixes ("n[1-2],login1").
    """
    hosts: list[str] = []
    for part in _split_top_level(hostlist.strip()):
        expanded = [""]
        for text, spec in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", part):
            if not text and not spec:
                continue
            choices = _expand_range(spec, hostlist) if spec else [""]
            expanded = [e + text + c for e in expanded for c in choices]
        hosts.extend(expanded)
    return hosts


def expand_hostlist(hostlist: str, use_scontrol: bool = True) -> list[str]:
    """Hosts of a Slurm host list: `scontrol show hostnames` when available, else Python.

    scontrol is Slurm's own parser (it knows every form the site's version writes); the
    Python parser covers the standard forms when scontrol is missing or fails.
    """
    if use_scontrol and shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", hostlist],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.split()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return parse_hostlist(hostlist)


def parse_tasks_per_node(spec: str) -> list[int]:
    """ "2(x3),1" -> [2, 2, 2, 1]: Slurm's compressed tasks-per-node list."""
    counts: list[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise ValueError(f"bad tasks-per-node list {spec!r}")
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def master_port(job_id: int | str) -> int:
    """A port every node of a job derives alike and two jobs on a node rarely share."""
    return 10000 + int(job_id) % 50000


def _node_address(host: str) -> str:
    """`host` if it resolves, else the NodeAddr Slurm knows for that node name.

    Node names need not be DNS names (the local test cluster's node "n1" is 127.0.0.1).
    """
    try:
        socket.getaddrinfo(host, None)
        return host
    except OSError:
        pass
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "node", "-o", host],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            m = re.search(r"\bNodeAddr=(\S+)", out)
            if m:
                return m.group(1)
        except (OSError, subprocess.SubprocessError):
            pass
    return host


def slurm_to_torch_env(
    environ: Mapping[str, str], resolve_addr: bool = True, use_scontrol: bool = True
) -> dict[str, str]:
    """The torch.distributed variables for the srun task described by `environ`.

    Pure apart from host-name lookups (`resolve_addr`, `use_scontrol` turn them off for
    tests). Raises KeyError if `environ` is not an srun task's (no SLURM_PROCID).
    """
    rank = int(environ["SLURM_PROCID"])
    tpn_spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    tasks_per_node = parse_tasks_per_node(tpn_spec) if tpn_spec else None
    ntasks = (
        environ.get("SLURM_STEP_NUM_TASKS")
        or environ.get("SLURM_NTASKS")
        or environ.get("SLURM_NPROCS")
    )
    if ntasks:
        world = int(ntasks)
    elif tasks_per_node:
        world = sum(tasks_per_node)
    else:
        world = 1
    node_id = int(environ.get("SLURM_NODEID", "0"))
    if tasks_per_node and node_id < len(tasks_per_node):
        local_world = tasks_per_node[node_id]
    else:
        local_world = world
    nodelist = (
        environ.get("SLURM_STEP_NODELIST")
        or environ.get("SLURM_JOB_NODELIST")
        or environ.get("SLURM_NODELIST")
    )
    hosts = expand_hostlist(nodelist, use_scontrol) if nodelist else []
    addr = hosts[0] if hosts else "127.0.0.1"
    if resolve_addr:
        addr = _node_address(addr)
    job_id = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID") or "0"
    cpus = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": addr,
        "MASTER_PORT": str(master_port(job_id)),
        "OMP_NUM_THREADS": cpus if cpus.isdigit() and int(cpus) > 0 else "1",
    }


def apply_slurm_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set torch.distributed's variables from Slurm's, in place; return those it set.

    Does nothing outside an srun task (no SLURM_PROCID) or when a launcher already set
    RANK and WORLD_SIZE; otherwise sets each variable that is not present yet.
    """
    if "SLURM_PROCID" not in environ or ("RANK" in environ and "WORLD_SIZE" in environ):
        return {}
    mapped = slurm_to_torch_env(environ)
    applied = {k: v for k, v in mapped.items() if k not in environ}
    environ.update(applied)
    return applied


def _mark_ready(ready_dir: str | None) -> None:
    """Leave this task's file in the batch script's `$step_ready` directory (if given)."""
    if not ready_dir:
        return
    name = os.environ.get("SLURM_PROCID") or f"pid{os.getpid()}"
    try:
        os.close(os.open(os.path.join(ready_dir, name), os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:  # the batch script then waits its 30 s and sends anyway
        print(f"mbtrain.cluster.env: cannot mark the task ready: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """`python -m mbtrain.cluster.env [--] CMD ARGS...`: apply the mapping, exec CMD."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        sys.exit("usage: python -m mbtrain.cluster.env [--] CMD [ARGS...]")
    # SIGUSR1 ("checkpoint and exit 75") kills a process that has no handler for it. The
    # trainer installs one only after importing torch and DeepSpeed (seconds), and Slurm may
    # send its time-limit warning before that. An ignored signal stays ignored across exec, so
    # an early request is dropped instead of killing the rank; the batch script repeats it
    # until the step exits, and the trainer's handler catches a later one. TERM keeps its
    # default: a cancel during start-up still ends the rank. First thing, then the batch
    # script is told (it sends nothing before every task is past this point).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _mark_ready(os.environ.get("MBTRAIN_STEP_READY"))
    apply_slurm_env(os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec keeps the PID that srun forwards signals (USR1, TERM) to.
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
