"""REDI reproduction: the logic behind the Snakemake workflow (one module per job)."""

__version__ = "0.1.0"
