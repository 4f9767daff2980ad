"""Slurm -> torch.distributed environment mapping, and host-list parsing."""

from __future__ import annotations

import pytest

from mbtrain.cluster.env import (
    apply_slurm_env,
    expand_hostlist,
    master_port,
    parse_hostlist,
    parse_tasks_per_node,
    slurm_to_torch_env,
)


@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("n1", ["n1"]),
        ("n[1-3,5]", ["n1", "n2", "n3", "n5"]),
        ("gpu-a[01-02]", ["gpu-a01", "gpu-a02"]),
        ("n[1-3,5],gpu-a[01-02]", ["n1", "n2", "n3", "n5", "gpu-a01", "gpu-a02"]),
        ("login1,n[8-10]", ["login1", "n8", "n9", "n10"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("node[098-101]-ib", ["node098-ib", "node099-ib", "node100-ib", "node101-ib"]),
        ("127.0.0.[1-2]", ["127.0.0.1", "127.0.0.2"]),
    ],
)
def test_parse_hostlist(hostlist, hosts):
    assert parse_hostlist(hostlist) == hosts
    # The scontrol path (when installed) must agree with the pure-Python one.
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["n[1-", "n1-3]", "n[a-b]", "n[3-1]"])
def test_parse_hostlist_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_hostlist(bad)


def test_parse_tasks_per_node():
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert parse_tasks_per_node("4") == [4]
    with pytest.raises(ValueError):
        parse_tasks_per_node("2(3)")


def _srun_env(nodes: int, gpn: int, node: int, local: int, job_id: int = 4242) -> dict[str, str]:
    """The variables srun gives task `local` on node `node` of a nodes x gpn step."""
    return {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_PROCID": str(node * gpn + local),
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
        "SLURM_NTASKS": str(nodes * gpn),
        "SLURM_TASKS_PER_NODE": f"{gpn}(x{nodes})" if nodes > 1 else str(gpn),
        "SLURM_JOB_NODELIST": f"gpu[{1:02d}-{nodes:02d}]" if nodes > 1 else "gpu01",
        "SLURM_CPUS_PER_TASK": "6",
    }


@pytest.mark.parametrize("nodes, gpn", [(1, 1), (1, 4), (2, 8), (3, 2), (16, 4)])
def test_mapping_n_nodes_by_g_tasks(nodes, gpn):
    seen = set()
    for node in range(nodes):
        for local in range(gpn):
            env = slurm_to_torch_env(_srun_env(nodes, gpn, node, local), resolve_addr=False)
            assert env["RANK"] == str(node * gpn + local)
            assert env["WORLD_SIZE"] == str(nodes * gpn)
            assert env["LOCAL_RANK"] == str(local)
            assert env["LOCAL_WORLD_SIZE"] == str(gpn)
            assert env["MASTER_ADDR"] == "gpu01"  # rank 0's node, the same for every rank
            assert env["MASTER_PORT"] == str(master_port(4242)) == "14242"
            assert env["OMP_NUM_THREADS"] == "6"
            seen.add(env["RANK"])
    assert len(seen) == nodes * gpn


def test_mapping_uneven_tasks_and_step_variables():
    # 7 tasks on 4 nodes: 2,2,2,1; the step's own variables win over the job's.
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_PROCID": "6",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "3",
        "SLURM_NTASKS": "99",
        "SLURM_STEP_NUM_TASKS": "7",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
        "SLURM_JOB_NODELIST": "x[1-9]",
        "SLURM_STEP_NODELIST": "n[5-8]",
    }
    out = slurm_to_torch_env(env, resolve_addr=False)
    assert out["WORLD_SIZE"] == "7"
    assert out["LOCAL_WORLD_SIZE"] == "1"
    assert out["MASTER_ADDR"] == "n5"
    assert out["MASTER_PORT"] == str(10000 + 123456 % 50000)
    assert out["OMP_NUM_THREADS"] == "1"  # no --cpus-per-task


def test_apply_only_under_srun_and_never_overrides():
    assert apply_slurm_env({"PATH": "/bin"}) == {}
    # Launched by torchrun inside an allocation: leave torch's variables alone.
    env = {**_srun_env(1, 2, 0, 1), "RANK": "0", "WORLD_SIZE": "1"}
    assert apply_slurm_env(env) == {}
    env = {**_srun_env(1, 2, 0, 1), "MASTER_PORT": "29500"}
    applied = apply_slurm_env(env)
    assert "MASTER_PORT" not in applied and env["MASTER_PORT"] == "29500"
    assert env["RANK"] == "1" and env["LOCAL_RANK"] == "1" and env["WORLD_SIZE"] == "2"


def test_unresolvable_node_name_falls_back(monkeypatch):
    # Without Slurm to ask, an unresolvable name is passed through unchanged.
    monkeypatch.setenv("PATH", "/nonexistent")
    env = _srun_env(1, 1, 0, 0)
    env["SLURM_JOB_NODELIST"] = "no-such-host-mbtrain"
    assert slurm_to_torch_env(env)["MASTER_ADDR"] == "no-such-host-mbtrain"
