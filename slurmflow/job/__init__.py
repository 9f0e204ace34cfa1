"""What runs inside every Slurm task: the wrapper that renders the trial's command, runs it, samples
its GPUs and records the outcome. Imports neither rich nor Hydra (unless a trial config needs Hydra).
"""
