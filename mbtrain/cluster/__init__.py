"""Slurm: the srun -> torch.distributed environment mapping (`env`), batch-script rendering
(`sbatch`), submission with a code snapshot (`submit`), run status and cancel (`status`), and
the `submit | status | cancel` subcommands (`cli`). See cluster/README.md for the local cluster.

Nothing is imported here on purpose: `python -m mbtrain.cluster.env` starts every rank and
must stay cheap to import.
"""
