"""Per-platform machinery behind :class:`jaxvision.layers.Conv`: what a convolution's passes
run as on a backend, and how that backend is set up before JAX starts it."""
