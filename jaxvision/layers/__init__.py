"""Reusable building blocks shared by the model families."""
from jaxvision.layers.conv import Conv, conv_general_dilated, he_normal, he_normal_fan_out, pad

__all__ = ["Conv", "conv_general_dilated", "he_normal", "he_normal_fan_out", "pad"]
