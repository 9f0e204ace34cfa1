"""GPU use: the NVML sampler that runs beside each GPU task, the statistics and idle rule over its
samples, the per-run usage roll-up, and its plots.
"""
