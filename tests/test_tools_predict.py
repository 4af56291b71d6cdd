"""`mnist-pipeline predict`: pictures laid out as MNIST's digits, arrays and IDX files, clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.evaluate import evaluate_model, load_model, predict_probabilities
from tasks.register import register_candidate
from tasks.registry import Registry, RegistryError
from tools.inputs import InputError, mnist_layout, read_inputs
from tools.predict import load_files, predict_files

N_PICTURES = 300


@pytest.fixture(scope="module")
def test_images(split_files):
    return split_files.load("test")


@pytest.fixture(scope="module")
def registry(trained_mlp, split_files, tmp_path_factory):
    """A registry whose production model is the session's trained mlp."""
    run_dir = Path(trained_mlp.model_path).parent
    registry = Registry(tmp_path_factory.mktemp("predict") / "registry")
    decision = register_candidate(registry, trained_mlp, evaluate_model(trained_mlp, split_files, run_dir),
                                  split_files, 0.5, {}, None)
    assert decision.promoted
    return registry


@pytest.fixture(scope="module")
def mlp(trained_mlp):
    return load_model(trained_mlp.model_path)


def write_png(path: Path, image: np.ndarray, mode: str = "L") -> Path:
    Image.fromarray(image).convert(mode).save(path)
    return path


def test_pngs_of_mnist_test_images_come_through_as_the_arrays_and_score_the_same(
        tmp_path, test_images, registry, mlp):
    images, labels = test_images[0][:N_PICTURES], test_images[1][:N_PICTURES]
    files = [str(write_png(tmp_path / f"{i}.png", image)) for i, image in enumerate(images)]

    names, laid_out = load_files(files, invert=False)
    assert [name for name, _ in names] == files
    # MNIST's own layout is kept: at most one grey level differs (digits whose brightest pixel is 254)
    assert np.abs(laid_out.astype(int) - images).max() <= 1

    array_accuracy = (predict_probabilities(mlp, images).argmax(1) == labels).mean()
    output = predict_files(files, registry, None, 1, False, as_json=True)
    predicted = np.array([p["top"][0]["class"] for p in json.loads(output)["predictions"]])
    assert (predicted == labels).mean() == array_accuracy
    assert array_accuracy > 0.9  # a trained model, so the equality above means something


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
def test_any_colour_mode_gives_the_same_image(tmp_path, test_images, mode):
    image = test_images[0][0]
    path = tmp_path / "digit.png"
    if mode == "I;16":
        Image.fromarray(image.astype(np.uint16) * 257).save(path)  # 16-bit grayscale PNG
    else:
        write_png(path, image, mode)
    assert Image.open(path).mode == mode
    assert np.abs(read_inputs(path)[0].astype(int) - image).max() <= 1


def test_inverted_picture_with_the_invert_option(tmp_path, test_images, registry, mlp):
    images = test_images[0][:50]
    # black on white, 28x28: --invert restores the MNIST image itself
    path = write_png(tmp_path / "inverted.png", 255 - images[0])
    assert np.abs(read_inputs(path, invert=True)[0].astype(int) - images[0]).max() <= 1

    # black on white, photographed-like: larger, RGB, JPEG, on an off-white page
    files = []
    for i, image in enumerate(images):
        big = Image.fromarray(255 - image).resize((140, 140), Image.BICUBIC).convert("RGB")
        page = Image.new("RGB", (260, 220), (250, 248, 240))
        page.paste(big, (70, 30))
        page.save(tmp_path / f"page-{i}.jpg", quality=90)
        files.append(str(tmp_path / f"page-{i}.jpg"))
    _, laid_out = load_files(files, invert=True)
    agree = (predict_probabilities(mlp, laid_out).argmax(1) == predict_probabilities(mlp, images).argmax(1)).mean()
    assert agree >= 0.9

    with pytest.raises(InputError, match="dark digit on a light background.*pass --invert"):
        load_files(files[:1], invert=False)


def test_big_off_centre_digit_is_fitted_into_20x20_and_centred_by_mass(test_images):
    digit = np.asarray(Image.fromarray(test_images[0][0]).resize((140, 140), Image.BICUBIC), dtype=float)
    canvas = np.zeros((300, 400))
    canvas[10:150, 240:380] = digit  # top right corner of a large picture
    laid_out = mnist_layout(canvas).astype(float)
    rows, cols = np.nonzero(laid_out > 25)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (19, 20, 21)
    centre = [(laid_out.sum(axis=1 - axis) * np.arange(28)).sum() / laid_out.sum() for axis in (0, 1)]
    assert np.allclose(centre, 14.0, atol=0.6)


def test_npy_and_idx_files_are_read_as_they_are(tmp_path, test_images):
    images = test_images[0][:5]
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


def test_every_bad_file_is_named_before_any_model_loads(tmp_path, test_images):
    good = write_png(tmp_path / "good.png", test_images[0][0])
    blank = write_png(tmp_path / "blank.png", np.full((40, 40), 30, np.uint8))
    with pytest.raises(InputError) as error:
        load_files([str(good), str(blank), str(tmp_path / "missing.png")], invert=False)
    text = str(error.value)
    assert "cannot classify 2 of 3 file(s)" in text
    assert "blank.png: no digit found" in text and "missing.png: cannot read it" in text


def test_no_production_model_yet_and_unknown_version(tmp_path, test_images, registry):
    png = str(write_png(tmp_path / "digit.png", test_images[0][0]))
    with pytest.raises(RegistryError, match="No production model yet.*mnist-pipeline run"):
        predict_files([png], Registry(tmp_path / "empty-registry"), None, 3, False, False)
    with pytest.raises(RegistryError, match="No version v0009 .*registered: v0001"):
        predict_files([png], registry, "v0009", 3, False, False)


def test_text_output_names_model_and_top_k_classes(tmp_path, test_images, registry):
    png = str(write_png(tmp_path / "digit.png", test_images[0][0]))
    lines = predict_files([png], registry, "v0001", 3, False, False).splitlines()
    assert lines[0] == "model v0001 (production)"
    assert lines[1].startswith(png)
    classes = lines[1][len(png):].split()
    assert len(classes) == 6 and classes[0] == str(test_images[1][0])  # 3 x "class (probability)"
    probabilities = [float(p.strip("()")) for p in classes[1::2]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_a_model_that_is_not_the_registered_one_is_not_served(tmp_path, trained_mlp, split_files, test_images):
    registry = Registry(tmp_path / "registry")
    evaluation = evaluate_model(trained_mlp, split_files, tmp_path / "eval")
    register_candidate(registry, trained_mlp, evaluation, split_files, 0.5, {}, None)
    model = registry.version_dir("v0001") / "model.keras"
    model.write_bytes(model.read_bytes() + b"tampered")
    png = str(write_png(tmp_path / "digit.png", test_images[0][0]))
    with pytest.raises(RegistryError, match="not the one registered as v0001"):
        predict_files([png], registry, None, 3, False, False)
