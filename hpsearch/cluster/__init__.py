"""Putting workers on clusters: SLURM job arrays (slurm.py)."""
