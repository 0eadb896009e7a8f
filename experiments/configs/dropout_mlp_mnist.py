"""Dropout MLP with max-norm constraint on MNIST (Srivastava et al., 2014).

    python -m jaxvision.train --config experiments/configs/dropout_mlp_mnist.py --workdir /tmp/dropout_mlp_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: 1 CPU
Paper's figure: ~1.05-1.25% test error for dropout nets with max-norm; 1-layer MLP 1.60%.
Expected result: ~1.2% held-out error.  arg 'maxout' trains the maxout MLP.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=50)
    c.model = "maxout_mlp_mnist" if arg == "maxout" else "dropout_mlp_mnist"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.95
    c.max_norm = 3.5
    c.schedule = "cosine"
    return lock(c)
