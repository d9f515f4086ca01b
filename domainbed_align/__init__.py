"""ALIGN and explanation-guided baselines as DomainBed-compatible algorithms."""
__version__ = "0.1.0"
