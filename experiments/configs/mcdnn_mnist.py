"""One column of a multi-column DNN committee on MNIST (Ciresan et al., 2012).

    python -m jaxvision.train --config experiments/configs/mcdnn_mnist.py --workdir /tmp/mcdnn_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: 1 CPU; a column trains in minutes on 2 cores
Paper's figure: 0.23% test error for a 35-column committee; single columns 0.3-0.4%.
Expected result: each column ~1.4-1.5% held-out error at 28x28 in 6 epochs (docs/results.md); a committee of columns (python -m jaxvision.evaluate --workdirs /tmp/col0,/tmp/col1,/tmp/col2) lower than its best column.

Column 1 of the committee (seed 1, random shifts of up to 2 pixels); ``:N`` trains column N
(seed N, with the shifts when N is odd):

    python -m jaxvision.train --config experiments/configs/mcdnn_mnist.py:1 --workdir /tmp/col1 \
        --config.dataset.path=/path/to/mnist_idx_folder

Paper's figure: single columns 0.3-0.4% test error.
Expected result: ~1.4-1.7% held-out error at 28x28 in 6 epochs (docs/results.md).
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=6)
    c.model = "mcdnn_column_mnist"
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.schedule = "cosine"
    # columns differ by seed and by input preprocessing (arg "N" picks column N)
    if arg:
        c.seed = int(arg)
        c.augment = "random_crop(pad=2)" if int(arg) % 2 else ""  # shifts of up to 2 pixels
    return lock(c)
