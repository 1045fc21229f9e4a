"""dadf: distributed training of deep anomaly detectors, grids of runs, and the papers' tables."""
__version__ = "0.1.0"
