"""GPU quotas: the admin's quota file to sacctmgr changes, association usage, and the pre-launch
budget verdict (does this sweep fit?).
"""
