"""jaxvision: image classification with large networks, as Flax (Linen) modules and optax."""
from jaxvision.registry import (create_model, is_model, list_models, model_cfg, register_model,
                                UnknownModelError)
from jaxvision import kernels


__version__ = "0.1.0"

__all__ = ["create_model", "is_model", "list_models", "model_cfg", "register_model",
           "UnknownModelError", "kernels", "__version__"]
