"""The experiment as the researcher wrote it: Hydra composition, the declared schema of stages,
the sweep grammar, and per-trial config rendering. The only package that imports Hydra or OmegaConf.
"""
