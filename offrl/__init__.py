"""offrl: a command-line RL trainer built around offline experience data."""

from offrl.batch import MultiAgentBatch, SampleBatch

__version__ = "0.1.0"

__all__ = ["MultiAgentBatch", "SampleBatch", "__version__"]
