"""The tutorial's synthetic data: shapes, determinism, balance, a learnable non-linear signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedsilo.data import synth
from fedsilo.data.synth import FEATURES, make_frames, write_sample_data


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames(seed=0)


def test_shapes_columns_and_types(frames: dict[str, pd.DataFrame]) -> None:
    assert set(frames) == {"train_silo0", "train_silo1", "test", "train_centralized"}
    assert frames["train_silo0"].shape == (16_000, 16)
    assert frames["train_silo1"].shape == (16_000, 16)
    assert frames["test"].shape == (4_000, 16)
    for frame in frames.values():
        assert list(frame.columns) == [*FEATURES, "y"]
        assert all(frame[c].dtype == np.float64 for c in FEATURES)
        assert frame["y"].dtype == np.int64
        assert set(frame["y"].unique()) == {0, 1}
        assert not frame.isna().any().any()


def test_centralized_is_the_two_silos_stacked(frames: dict[str, pd.DataFrame]) -> None:
    stacked = pd.concat([frames["train_silo0"], frames["train_silo1"]], ignore_index=True)
    pd.testing.assert_frame_equal(frames["train_centralized"], stacked)


def test_same_seed_same_data_other_seed_other_data(frames: dict[str, pd.DataFrame]) -> None:
    pd.testing.assert_frame_equal(make_frames(seed=0)["test"], frames["test"])
    assert not make_frames(seed=1)["test"].equals(frames["test"])


def test_classes_are_balanced_in_every_split(frames: dict[str, pd.DataFrame]) -> None:
    for frame in frames.values():
        assert 0.45 < frame["y"].mean() < 0.55


def test_the_signal_is_learnable_and_not_linear(frames: dict[str, pd.DataFrame]) -> None:
    test = frames["test"]
    x = test[FEATURES].to_numpy()
    bayes = np.mean((synth._score(x) > 0) == test["y"].to_numpy())
    train = frames["train_centralized"]
    linear = LogisticRegression(max_iter=1000).fit(train[FEATURES], train["y"])
    linear_accuracy = linear.score(test[FEATURES], test["y"])
    assert bayes > 0.85
    assert 0.75 < linear_accuracy < bayes - 0.04  # a network has more to learn than a line


def test_write_sample_data_writes_parquet_files(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    paths = write_sample_data(tmp_path / "new", seed=0)
    assert set(paths) == set(frames)
    for name, path in paths.items():
        assert path == tmp_path / "new" / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), frames[name])
    assert paths["test.parquet"] == paths["test"]
    with pytest.raises(KeyError):
        paths["nope.parquet"]
