"""The run directory, shared by the launching side and every task: its layout, the store (plan,
snapshot, scripts, status files), the typed append-only event log, and the run state reduced from it.
"""
