"""ALARA-QA engine: geometry, medical I/O, protocol, model adapters, runner, store."""

from qa.volume import Volume, resample_like, same_grid

__version__ = "0.1.0"
__all__ = ["Volume", "resample_like", "same_grid", "__version__"]
