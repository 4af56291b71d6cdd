"""The TensorFlow MNIST tutorial as written, step by step: the baseline the pipeline is measured against.

    python bench/tutorial.py --data-dir DIR

tfds load, map scale, shuffle 10,000, take/skip 10% validation, batch 100, the 784-50-50-10 MLP,
Adam, 5 epochs, early stopping patience 2, then evaluate on the test split. The only departure: tfds
is given the bundled MNIST files (`manual_dir`) because this machine is offline; an empty `--data-dir`
makes tfds prepare the dataset from them (cold), a prepared one is reused (warm).

Prints one JSON line: wall seconds from the start of this script, training seconds, test accuracy.
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "data" / "mnist"

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--data-dir", required=True, help="tensorflow-datasets data directory")
parser.add_argument("--epochs", type=int, default=5, help="5 as written; fewer for the --quick smoke run")
args = parser.parse_args()

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

tfds.disable_progress_bar()
mnist_dataset, mnist_info = tfds.load(
    name="mnist",
    with_info=True,
    as_supervised=True,
    data_dir=args.data_dir,
    download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(BUNDLE))},
)
mnist_train, mnist_test = mnist_dataset["train"], mnist_dataset["test"]

num_validation_samples = 0.1 * mnist_info.splits["train"].num_examples
num_validation_samples = tf.cast(num_validation_samples, tf.int64)
num_test_samples = mnist_info.splits["test"].num_examples
num_test_samples = tf.cast(num_test_samples, tf.int64)


def scale(image, label):
    image = tf.cast(image, tf.float32)
    image /= 255.0
    return image, label


scaled_train_and_validation_data = mnist_train.map(scale)
test_data = mnist_test.map(scale)

BUFFER_SIZE = 10000
shuffled_train_and_validation_data = scaled_train_and_validation_data.shuffle(BUFFER_SIZE)
validation_data = shuffled_train_and_validation_data.take(num_validation_samples)
train_data = shuffled_train_and_validation_data.skip(num_validation_samples)

BATCH_SIZE = 100
train_data = train_data.batch(BATCH_SIZE)
validation_data = validation_data.batch(num_validation_samples)
test_data = test_data.batch(num_test_samples)
validation_inputs, validation_targets = next(iter(validation_data))

input_size = 784
output_size = 10
hidden_layer_size = 50
model = tf.keras.Sequential(
    [
        tf.keras.Input(shape=(28, 28, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(hidden_layer_size, activation="relu"),
        tf.keras.layers.Dense(hidden_layer_size, activation="relu"),
        tf.keras.layers.Dense(output_size, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

NUM_EPOCHS = args.epochs
early_stopping = tf.keras.callbacks.EarlyStopping(patience=2)
train_started = time.perf_counter()
history = model.fit(
    train_data,
    epochs=NUM_EPOCHS,
    callbacks=[early_stopping],
    validation_data=(validation_inputs, validation_targets),
    verbose=2,
)
train_seconds = time.perf_counter() - train_started

test_loss, test_accuracy = model.evaluate(test_data, verbose=0)
print(
    json.dumps(
        {
            "wall_seconds": round(time.perf_counter() - STARTED, 3),
            "train_seconds": round(train_seconds, 3),
            "epochs": len(history.history["loss"]),
            "test_accuracy": round(float(test_accuracy), 4),
        }
    )
)
