"""Networks, data, training, evaluation and the checkpoint registry. Imports nothing else of parafeed.

from models import load_model
made = load_model("made-fmnist")      # eval mode, weights verified by SHA-256, loaded from safetensors
"""

from models.registry import Entry, list_models, load_model

__all__ = ["Entry", "list_models", "load_model"]
