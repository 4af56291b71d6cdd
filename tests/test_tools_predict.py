"""`mnist-pipeline predict`: pictures laid out as MNIST's digits, arrays and IDX files, clear errors.

On hand-made digits and the tiny models of the fast tier; real digits with a real model (accuracy of
pictures equal to that of the arrays) are in test_tools_predict_mnist.py.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.cli.predict import load_files, predict_files
from mnist_pipeline.core.data.pictures import InputError, mnist_layout, read_inputs
from mnist_pipeline.core.registry.registry import Registry, RegistryError
from support.data import synthetic_digits
from support.pictures import hand_made_zero, photographed, write_png


@pytest.fixture
def registry(two_versions):
    """v0001 (production) and v0002, tiny models of the synthetic digits."""
    return Registry(two_versions / "registry")


@pytest.mark.parametrize("centre", [13.5, 14.0, 14.5])
def test_a_digit_laid_out_as_mnist_comes_through_unchanged(tmp_path, centre):
    """MNIST's digits are centred to the half pixel: none may be moved or resampled."""
    digit = hand_made_zero(centre)
    assert np.abs(read_inputs(write_png(tmp_path / "digit.png", digit))[0].astype(int) - digit).max() <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
def test_any_colour_mode_gives_the_same_image(tmp_path, mode):
    image = hand_made_zero()
    path = tmp_path / "digit.png"
    if mode == "I;16":
        Image.fromarray(image.astype(np.uint16) * 257).save(path)  # 16-bit grayscale PNG
    else:
        write_png(path, image, mode)
    assert Image.open(path).mode == mode
    assert np.abs(read_inputs(path)[0].astype(int) - image).max() <= 1


def test_inverted_picture_with_the_invert_option(tmp_path):
    digit = hand_made_zero()
    # black on white, 28x28: --invert restores the MNIST image itself
    path = write_png(tmp_path / "inverted.png", 255 - digit)
    assert np.abs(read_inputs(path, invert=True)[0].astype(int) - digit).max() <= 1

    # black on white, photographed-like: read as the same photograph of a white digit on black would be
    _, [from_paper] = load_files([str(photographed(255 - digit, tmp_path / "page.jpg"))], invert=True)
    _, [from_black] = load_files([str(photographed(digit, tmp_path / "black.jpg", paper=(0, 0, 0)))], invert=False)
    # (both are centred to the half pixel, so they may be placed a pixel apart)
    similarity = max(np.corrcoef(np.roll(from_black, (dy, dx), (0, 1)).ravel(), from_paper.ravel())[0, 1]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert similarity > 0.99

    with pytest.raises(InputError, match="dark digit on a light background.*pass --invert"):
        load_files([str(tmp_path / "page.jpg")], invert=False)


def test_big_off_centre_digit_is_fitted_into_20x20_and_centred_by_mass():
    digit = np.asarray(Image.fromarray(hand_made_zero()).resize((140, 140), Image.BICUBIC), dtype=float)
    canvas = np.zeros((300, 400))
    canvas[10:150, 240:380] = digit  # top right corner of a large picture
    laid_out = mnist_layout(canvas).astype(float)
    rows, cols = np.nonzero(laid_out > 25)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (19, 20, 21)
    centre = [(laid_out.sum(axis=1 - axis) * np.arange(28)).sum() / laid_out.sum() for axis in (0, 1)]
    assert np.allclose(centre, 14.0, atol=0.6)


def test_npy_and_idx_files_are_read_as_they_are(tmp_path):
    images, _ = synthetic_digits(5, seed=0)
    np.save(tmp_path / "five.npy", images)
    np.save(tmp_path / "flat.npy", images.reshape(5, 784).astype(np.float32))
    idx = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes()
    (tmp_path / "five-idx3-ubyte").write_bytes(idx)
    (tmp_path / "five-idx3-ubyte.gz").write_bytes(gzip.compress(idx))
    for name in ("five.npy", "flat.npy", "five-idx3-ubyte", "five-idx3-ubyte.gz"):
        assert np.array_equal(read_inputs(tmp_path / name), images), name
    assert np.array_equal(read_inputs(tmp_path / "five.npy", invert=True), 255 - images)

    names, _ = load_files([str(tmp_path / "five.npy")], invert=False)
    assert names == [(str(tmp_path / "five.npy"), i) for i in range(5)]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("garbage.png", b"this is not a picture at all", "not an image, .npy array or IDX file"),
        ("empty.jpg", b"", "not an image, .npy array or IDX file"),
        ("labels.npy", np.arange(10, dtype=np.uint8), r"shape \[10\] \(a labels file\?\)"),
        ("wrong.npy", np.zeros((3, 32, 32), np.uint8), r"shape \[3, 32, 32\]; expected \[28, 28\]"),
        ("scaled.npy", np.full((28, 28), 0.5, np.float32), "multiply by 255"),
        ("objects.npy", np.array([{"a": 1}], dtype=object), "not a readable .npy array"),
        ("short-idx3-ubyte", b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 99,
         "truncated or damaged"),
    ],
)
def test_unreadable_files_fail_clearly_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=True)  # written with pickle to check reading refuses it
    with pytest.raises(InputError, match=message) as error:
        load_files([str(path)], invert=False)
    assert str(path) in str(error.value)


def test_every_bad_file_is_named_before_any_model_loads(tmp_path):
    good = write_png(tmp_path / "good.png", hand_made_zero())
    blank = write_png(tmp_path / "blank.png", np.full((40, 40), 30, np.uint8))
    files = [str(good), str(blank), str(tmp_path / "missing.png")]
    with pytest.raises(InputError) as error:  # not "no production model": the files are checked first
        predict_files(files, Registry(tmp_path / "no-registry"), None, 3, False, False)
    text = str(error.value)
    assert "cannot classify 2 of 3 file(s)" in text
    assert "blank.png: no digit found" in text and "missing.png: cannot read it" in text


def test_no_production_model_yet_and_unknown_version(tmp_path, registry):
    png = str(write_png(tmp_path / "digit.png", hand_made_zero()))
    with pytest.raises(RegistryError, match="No production model yet.*mnist-pipeline run"):
        predict_files([png], Registry(tmp_path / "empty-registry"), None, 3, False, False)
    with pytest.raises(RegistryError, match="No version v0009 .*registered: v0001, v0002"):
        predict_files([png], registry, "v0009", 3, False, False)


def test_text_output_names_model_and_top_k_classes(tmp_path, registry, synthetic_split):
    images, labels = synthetic_split.load("test")
    array, png = tmp_path / "digits.npy", write_png(tmp_path / "digit.png", hand_made_zero())
    np.save(array, images[:2])
    lines = predict_files([str(png), str(array)], registry, "v0001", 3, False, False).splitlines()
    assert lines[0] == "model v0001 (production)"
    labelled = [str(png), f"{array}[0]", f"{array}[1]"]
    width = max(map(len, labelled))
    assert [line[:width].rstrip() for line in lines[1:]] == labelled
    for line, label in zip(lines[2:], labels[:2], strict=False):
        classes = line[width:].split()
        assert len(classes) == 6 and classes[0] == str(label)  # 3 x "class (probability)", best first
        probabilities = [float(p.strip("()")) for p in classes[1::2]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001

    lines = predict_files([str(array)], registry, "v0002", 1, False, False).splitlines()
    assert lines[0] == "model v0002" and len(lines[1].split()) == 3  # label, 1 x "class (probability)"


def test_json_output_names_model_and_each_images_top_classes(tmp_path, registry, synthetic_split):
    images, labels = synthetic_split.load("test")
    np.save(tmp_path / "digits.npy", images[:20])
    output = json.loads(predict_files([str(tmp_path / "digits.npy")], registry, None, 2, False, as_json=True))
    assert output["model"] == {"version": "v0001", "production": True}
    assert [(p["file"], p["index"]) for p in output["predictions"]] == [(str(tmp_path / "digits.npy"), i)
                                                                       for i in range(20)]
    assert all(len(p["top"]) == 2 for p in output["predictions"])
    assert [p["top"][0]["class"] for p in output["predictions"]] == labels[:20].tolist()  # a strong tiny model


def test_a_model_that_is_not_the_registered_one_is_not_served(tmp_path, registry):
    model = registry.version_dir("v0001") / "model.keras"
    model.write_bytes(model.read_bytes() + b"tampered")
    png = str(write_png(tmp_path / "digit.png", hand_made_zero()))
    with pytest.raises(RegistryError, match="not the one registered as v0001"):
        predict_files([png], registry, None, 3, False, False)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, from the header too
def test_a_picture_too_large_is_refused_from_its_header_before_any_decoding(tmp_path):
    """A 12,000 x 12,000 PNG of ~140 KB would decode into 144 MB of pixels and 1.2 GB of grey levels:
    refused by its header, in a process that stays small."""
    import subprocess
    import sys

    from support.pictures import huge_png

    huge = tmp_path / "huge.png"
    huge.write_bytes(huge_png(12_000, 12_000))
    assert huge.stat().st_size < 200_000
    with pytest.raises(InputError, match=r"huge.png: the picture is 12000 x 12000 pixels \(144.0 megapixels\).*Scale it down"):
        load_files([str(huge)], invert=False)

    # the probe's peak memory from /proc (ru_maxrss would count the memory of the test process it was forked from)
    probe = ("import re, sys; from pathlib import Path; from mnist_pipeline.core.data.pictures import InputError, read_inputs\n"
             "try: read_inputs(Path(sys.argv[1]))\nexcept InputError as error: print(error)\n"
             "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text()).group(1)) // 1024)")
    result = subprocess.run([sys.executable, "-c", probe, str(huge)], capture_output=True, text=True, timeout=300)
    message, peak_mb = result.stdout.splitlines()
    assert "12000 x 12000 pixels" in message
    assert int(peak_mb) < 300, f"reading the header took {peak_mb} MB"
