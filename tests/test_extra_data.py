"""Extra labelled pictures: what is read, skipped or refused, and how they change the split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.data.extra_data import ExtraDataError, scan
from mnist_pipeline.core.data.splits import SplitSources, check_split, ensure_split, make_recipe
from mnist_pipeline.core.storage.paths import bundled_mnist_dir
from support.pictures import hand_made_zero, photographed, write_png


@pytest.fixture
def extra(tmp_path):
    """Two zeros (a clean PNG and a photographed JPEG) and a one, plus things that are skipped."""
    root = tmp_path / "extra"
    (root / "0").mkdir(parents=True)
    (root / "1").mkdir()
    write_png(root / "0" / "clean.png", hand_made_zero())
    photographed(hand_made_zero(), root / "0" / "photo.jpg", paper=(8, 8, 8))  # bigger, off centre, JPEG
    write_png(root / "1" / "one.PNG", np.rot90(hand_made_zero()).copy())
    (root / "1" / "notes.txt").write_text("not a picture")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_pictures_are_found_by_class_folder_and_the_rest_skipped(extra):
    found = scan(extra)
    assert found.pictures == (("0/clean.png", 0), ("0/photo.jpg", 0), ("1/one.PNG", 1))
    assert found.skipped == (".DS_Store", "1/notes.txt")
    images, labels = found.load()
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 1]
    assert np.array_equal(images[0], hand_made_zero())  # an MNIST-like digit comes through unchanged


def test_wrong_folder_names_fail_listing_each(extra):
    (extra / "ten").mkdir()
    (extra / "stray.png").write_bytes(b"")
    with pytest.raises(ExtraDataError) as error:
        scan(extra)
    message = str(error.value)
    assert "2 item(s) does not belong" in message
    assert f"{extra / 'stray.png'}: not a class folder" in message and f"{extra / 'ten'}: not a class folder" in message


def test_unusable_pictures_fail_listing_each_with_its_path(extra):
    (extra / "1" / "truncated.png").write_bytes((extra / "0" / "clean.png").read_bytes()[:60])
    write_png(extra / "1" / "blank.png", np.zeros((28, 28), np.uint8))
    write_png(extra / "1" / "dark-on-light.png", 255 - hand_made_zero())
    with pytest.raises(ExtraDataError) as error:
        scan(extra).load()
    message = str(error.value)
    assert "3 item(s) cannot be used" in message
    for name, why in (
        ("truncated.png", "not a picture that can be read"),
        ("blank.png", "no digit found"),
        ("dark-on-light.png", "a dark digit on a light background"),
    ):
        assert f"{extra / '1' / name}: " in message and why in message, name


def test_a_missing_folder_is_named():
    with pytest.raises(ExtraDataError, match="extra data folder /nowhere does not exist"):
        scan(Path("/nowhere"))


@pytest.mark.slow  # two splits of the real MNIST
def test_adding_or_removing_a_picture_changes_the_split_and_only_train_grows(extra, tmp_path):
    def recipe():
        return make_recipe("bundle", bundled_mnist_dir(), 0.1, 42, scan(extra))

    first = recipe()
    write_png(extra / "1" / "another.png", np.rot90(hand_made_zero(13.0)).copy())
    second = recipe()
    (extra / "1" / "another.png").unlink()
    assert first.key != second.key and recipe().key == first.key  # content, not time, decides
    assert make_recipe("bundle", bundled_mnist_dir(), 0.1, 42).key not in (first.key, second.key)

    sources = SplitSources(bundled_mnist_dir(), tmp_path / "tfds")
    plain = check_split(ensure_split(make_recipe("bundle", bundled_mnist_dir(), 0.1, 42), sources, tmp_path / "splits"))
    grown = check_split(ensure_split(first, replace(sources, extra_dir=extra), tmp_path / "splits"))
    (train_images, train_labels), (plain_images, plain_labels) = grown.load("train"), plain.load("train")
    assert len(train_labels) == len(plain_labels) + 3
    assert np.array_equal(train_images[:-3], plain_images) and train_labels[-3:].tolist() == [0, 0, 1]
    for name in ("validation", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(grown.load(name), plain.load(name), strict=True)), name
