"""An unprepared or unknown tfds dataset names the command that prepares it and its extra."""
import pytest

from jaxvision.data.sources import DataError, load_tfds

pytest.importorskip("tensorflow_datasets")


def test_unprepared_and_unknown_tfds_datasets(tmp_path):
    with pytest.raises(DataError, match=r"not prepared in .*tfds build mnist --data_dir") as e:
        load_tfds("mnist", data_dir=str(tmp_path), splits=("train", "test"))
    assert "jaxvision[tf]" in str(e.value)
    with pytest.raises(DataError, match=r"not available.*tfds build no_such_set_xyz") as e:
        load_tfds("no_such_set_xyz", data_dir=str(tmp_path))
    assert "jaxvision[tf]" in str(e.value)
