"""The light model (LiteRT, `model.tflite`): made and verified at registration, recorded with its
SHA-256, used by `predict` without TensorFlow, refused when damaged, left out when it disagrees with
Keras, and added to versions registered before it by `registry convert`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mnist_pipeline.core.modelling.light
from mnist_pipeline.cli.predict import classify
from mnist_pipeline.core.modelling.litert import LIGHT_MODEL_FILE, LightModel
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.registry import RegistryError, open_registry
from mnist_pipeline.core.support.files import sha256_file
from support.commands import PROJECT_ROOT, run_cli
from support.training import BACKENDS, register

WRITTEN_BEFORE = PROJECT_ROOT / "tests" / "data" / "registry-5e89607"


def test_a_registered_version_carries_its_verified_light_model(registry, synthetic_split):
    record = registry.read_version("v0001")["light_model"]
    path = registry.light_model_path("v0001")
    assert path is not None and path.name == LIGHT_MODEL_FILE and record["sha256"] == sha256_file(path)
    images, _ = synthetic_split.load("test")
    assert record["verified_on_images"] == len(images) and record["top_class_disagreements"] == 0
    keras = predict_probabilities(load_model(registry.model_path("v0001")), images)
    light = LightModel(path)
    for size in (len(images), 1, 7):  # the input is resized to each batch
        assert np.abs(light.predict(images[:size]) - keras[:size]).max() <= 1e-5
    assert "`model.tflite` (LiteRT" in (registry.version_dir("v0001") / "model_card.md").read_text()


def test_predict_runs_the_light_model_without_tensorflow(two_versions, synthetic_split, tmp_path):
    images = synthetic_split.load("test")[0][:3]
    np.save(tmp_path / "three.npy", images)
    program = (
        "import sys; from mnist_pipeline.cli.main import main; code = main(sys.argv[1:]); "
        "print('TENSORFLOW', 'tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(code)"
    )
    args = ["predict", str(tmp_path / "three.npy"), "--json", "--artifacts-dir", str(two_versions)]
    result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""  # nor LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    output, loaded = result.stdout.rsplit("TENSORFLOW", 1)
    assert loaded.split() == ["False", "False"]
    keras = predict_probabilities(load_model(open_registry(two_versions / "registry").model_path("v0001")), images)
    answered = json.loads(output)["predictions"]
    assert [p["top"][0]["class"] for p in answered] == list(keras.argmax(axis=1))
    assert np.allclose([p["top"][0]["probability"] for p in answered], keras.max(axis=1), atol=2e-6)


def test_a_damaged_light_model_is_not_used(registry):
    path = registry.light_model_path("v0001")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="Light model .* not the one registered for v0001"):
        classify(registry, "v0001", np.zeros((1, 28, 28), np.uint8))
    assert any("Light model" in problem for problem in registry.check())


def test_a_light_model_that_disagrees_is_left_out_and_keras_serves(tmp_path, tiny_strong, synthetic_split, monkeypatch):
    monkeypatch.setattr(mnist_pipeline.core.modelling.light, "TOLERANCE", -1.0)  # nothing passes
    registry = open_registry(tmp_path / "registry")
    assert register(registry, tiny_strong, synthetic_split).promoted
    record = registry.read_version("v0001")["light_model"]
    assert record["file"] is None and "disagrees with Keras" in record["problem"]
    assert not (registry.version_dir("v0001") / LIGHT_MODEL_FILE).exists()
    assert registry.light_model_path("v0001") is None
    assert (
        "**no light model**: the light model disagrees" in (registry.version_dir("v0001") / "model_card.md").read_text()
    )
    images, _ = synthetic_split.load("test")
    keras = predict_probabilities(load_model(registry.model_path("v0001")), images[:4])
    assert np.array_equal(classify(registry, "v0001", images[:4]), keras)


@pytest.mark.slow  # the CLI in a fresh process importing TensorFlow; verified on MNIST's test images
@pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)
def test_registry_convert_gives_older_versions_their_light_model(registry_kind, registry_location, tmp_path):
    """On a registry written before light models; the versions' own files stay as they were."""
    from mnist_pipeline.core.storage.store import ObjectStore

    if registry_kind == "folder":
        registry_location = str(tmp_path / "artifacts" / "registry")
        shutil.copytree(WRITTEN_BEFORE / "folder", registry_location)
    else:
        objects = ObjectStore.for_url(registry_location)
        for path in sorted(p for p in (WRITTEN_BEFORE / "store").rglob("*") if p.is_file()):
            objects.upload(path, f"{registry_location}/{path.relative_to(WRITTEN_BEFORE / 'store').as_posix()}")
    registry = open_registry(registry_location)
    version_json = registry.backend.version_file("v0001", "version.json").read_bytes()
    assert registry.light_record("v0001") is None and registry.light_model_path("v0001") is None

    if registry_kind == "folder":  # as a user does
        converted = run_cli("registry", "convert", "--artifacts-dir", str(tmp_path / "artifacts"))
        assert converted.returncode == 0, converted.stderr[-2000:]
        assert "v0001  converted: model.tflite (verified on 10000 test images)" in converted.stdout
    else:
        assert [registry.convert(version)["file"] for version in registry.versions()] == [LIGHT_MODEL_FILE] * 2
    registry = open_registry(registry_location)
    assert registry.light_model_path("v0001") is not None and registry.check() == []
    assert registry.backend.version_file("v0001", "version.json").read_bytes() == version_json
    assert registry.convert("v0001") == registry.light_record("v0001")  # converted once only


@pytest.mark.slow  # two trainings and two SavedModel exports
@pytest.mark.parametrize("preset", ["cnn", "cnn-best"])
def test_the_augmented_presets_register_serve_and_export_like_the_others(preset, synthetic_split, tmp_path):
    """Trained with random shifts (and rotations), saved without them: the version's light model and
    its SavedModel export give Keras' answers, the same answers every time."""
    import tensorflow as tf

    from mnist_pipeline.core.registry.registry import SAVED_MODEL_DIR
    from support.training import train_and_evaluate

    run = train_and_evaluate(synthetic_split, tmp_path / "run", preset, seed=4, epochs=1, batch_size=64)
    registry = open_registry(tmp_path / "registry")
    register(registry, run, synthetic_split, threshold=0.01)
    images, _ = synthetic_split.load("test")
    keras = predict_probabilities(load_model(registry.model_path("v0001")), images)
    assert registry.light_record("v0001")["top_class_disagreements"] == 0
    light = LightModel(registry.light_model_path("v0001"))
    assert np.abs(light.predict(images) - keras).max() <= 1e-5
    serving = tf.saved_model.load(str(registry.version_dir("v0001") / SAVED_MODEL_DIR)).signatures["serving_default"]
    exported = [serving(image=tf.constant(images))["output_0"].numpy() for _ in range(2)]
    assert np.array_equal(exported[0], exported[1])
    np.testing.assert_allclose(exported[0], keras, atol=1e-5)
