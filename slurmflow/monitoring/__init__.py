"""Keeping a campaign moving: the retry policy, one monitor tick (observe, decide, act), the monitor
loop (foreground, --once, or as a self-resubmitting Slurm job), dependency rewiring, retry of failed
trials, and the campaign status read from the event log.
"""
