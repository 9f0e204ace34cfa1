"""Starting and stopping a run: launch (write the run directory, then submit), the idempotent
submitter (intent before each sbatch, reconcile by name on resume), callable stages through
submitit, and cancel.
"""
