"""Slurm itself, and nothing of slurmflow's domain: the one command runner, sbatch argv and script
builders, parsers of squeue/sacct/scontrol/sinfo output, capability probes, units, back-off.

Everything here takes and returns plain values or the Slurm types of `slurm.types`; it imports no
experiment, plan or run module, nor rich or Hydra (an import-linter contract holds it).
"""
