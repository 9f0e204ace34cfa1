"""From an experiment to a plan: stages and trials to job arrays, the dependency edges between
them, the JobSpec of each node, and the size guard against the cluster's limits. Pure: no Slurm
calls, no files.
"""
