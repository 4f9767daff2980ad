"""Slurm: the srun -> torch.distributed environment mapping (`env`), batch-script rendering
(`sbatch`), submission with a code snapshot (`submit`), a job's state and cancel (`status`).
The `submit | status | cancel` commands are `mbtrain.cli.cluster`. See cluster/README.md for
the local cluster.

Nothing is imported here on purpose: `python -m mbtrain.cluster.env` starts every rank and
must stay cheap to import.
"""
