"""Data sources, host transforms and on-device augmentations."""
from jaxvision.data.transforms import eval_image  # noqa: F401
