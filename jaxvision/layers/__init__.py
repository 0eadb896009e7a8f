"""Reusable building blocks shared by the model families."""
from jaxvision.layers.activations import PReLU
from jaxvision.layers.attention import CBAM, SqueezeExcite
from jaxvision.layers.conv import Conv, conv_general_dilated, he_normal, he_normal_fan_out, pad
from jaxvision.layers.conv_bn import ConvBN
from jaxvision.layers.drop import DropPath, drop_path
from jaxvision.layers.head import classifier_head
from jaxvision.layers.helpers import make_divisible
from jaxvision.layers.lrn import LocalResponseNorm, local_response_norm
from jaxvision.layers.pooling import adaptive_avg_pool, avg_pool, global_avg_pool, max_pool
from jaxvision.layers.spatial_transformer import SpatialTransformer, affine_grid, grid_sample
from jaxvision.layers.std_conv import ScaledStdConv

__all__ = ["CBAM", "Conv", "ConvBN", "DropPath", "LocalResponseNorm", "PReLU", "ScaledStdConv",
           "SpatialTransformer", "SqueezeExcite", "adaptive_avg_pool", "affine_grid", "avg_pool",
           "classifier_head", "conv_general_dilated", "drop_path", "global_avg_pool", "grid_sample",
           "he_normal", "he_normal_fan_out", "local_response_norm", "make_divisible", "max_pool",
           "pad"]
