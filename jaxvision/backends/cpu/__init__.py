"""The CPU backend: the convolution library XLA:CPU is started with
(:mod:`~jaxvision.backends.cpu.platform`) and the matrix-product formulations the CPU plan
rule chooses between (:mod:`~jaxvision.backends.cpu.formulations`).  The rule itself and the
dispatch are in :mod:`jaxvision.layers.conv_impl`."""
from jaxvision.backends.cpu.platform import configure_cpu_convolutions, cpu_conv_library

__all__ = ["configure_cpu_convolutions", "cpu_conv_library"]
