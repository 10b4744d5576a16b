"""guidetune: interpretability-guided fine-tuning of transformer language models."""
from .errors import ConfigError, GuidetuneError, TrainingDiverged
from .layers.capture import Capture, Captures
from .layers.names import LayerScheme, resolve

__version__ = "0.1.0"

__all__ = ["Capture", "Captures", "ConfigError", "GuidetuneError", "LayerScheme", "TrainingDiverged", "resolve",
           "__version__"]
