"""The demo model: a small CNN trained here, deterministically, on the generated shapes.

No weights can be downloaded on the machines this project runs on, so the demo model is made
from data the project generates. It is published to the model bucket exactly as a user's model
would be (``models/shapes/v1/model.keras`` + ``card.json``), and loaded by the same store.

Run ``python -m devtools.demo_model`` to build it (cached under .cache/demo-model/).
"""

import argparse
import hashlib
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np

from devtools import shapes

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DEMO_CACHE_DIR", REPO / ".cache" / "demo-model"))
NAME, VERSION = "shapes", "v1"
INPUT_SIZE = 64
TRAIN_COUNT, TEST_COUNT, EPOCHS, SEED = 2400, 400, 8, 1


def fingerprint() -> str:
    """Changes when anything that shapes the trained model changes (data, network, training, card)."""
    digest = hashlib.sha256(Path(shapes.__file__).read_bytes())
    for part in (inspect.getsource(build_model), inspect.getsource(train), inspect.getsource(to_model_input),
                 json.dumps(card(), sort_keys=True), repr((INPUT_SIZE, TRAIN_COUNT, TEST_COUNT, EPOCHS, SEED))):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def card() -> dict:
    return {
        "name": NAME,
        "version": VERSION,
        "description": "Demo CNN: which shape (circle, square, triangle or none) is on a textured background.",
        "input_height": INPUT_SIZE,
        "input_width": INPUT_SIZE,
        "preprocessing": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "output": "logits",
        "class_names": list(shapes.MODEL_CLASSES),
        "cam_layer": "last_conv",
        "target": {"mode": "predicted", "k": 1},
        "default_methods": {
            "gradient": ["Saliency", "IntegratedGradients", "SmoothGrad", "GradCAM"],
            "perturbation": ["Occlusion", "Rise", "SobolAttributionMethod"],
        },
        "top_k": 3,
    }


def to_model_input(images: np.ndarray) -> np.ndarray:
    """The same resize and preprocessing the functions apply (explain_core)."""
    from explain_core.attribution import to_model_input as model_input
    from explain_core.model_card import ModelCard

    return model_input(images, ModelCard.model_validate(card()))


def build_model():
    import keras

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    # A strided first layer keeps training under a minute on 2 CPU cores.
    x = keras.layers.Conv2D(16, 5, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(len(shapes.MODEL_CLASSES), name="logits")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def train(directory: Path) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    images, labels, _ = shapes.dataset(TRAIN_COUNT, seed=SEED, with_none=True)
    test_images, test_labels, _ = shapes.dataset(TEST_COUNT, seed=SEED + 1, with_none=True)
    x, x_test = to_model_input(images), to_model_input(test_images)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, labels, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == test_labels))
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    (directory / "card.json").write_text(json.dumps(card(), indent=2))
    report = {"test_accuracy": accuracy, "train_seconds": round(time.perf_counter() - started, 1),
              "train_images": TRAIN_COUNT, "test_images": TEST_COUNT, "epochs": EPOCHS}
    (directory / "training.json").write_text(json.dumps(report, indent=2))
    return report


#: Training images published as the SHAP background (pixels, the model's input size).
BACKGROUND_COUNT = 16


def write_background(directory: Path) -> None:
    """``background.npy``: the first training images, as uint8 pixels at the input size (no pickle)."""
    from explain_core.images import resize

    images, _, _ = shapes.dataset(BACKGROUND_COUNT, seed=SEED, with_none=True)
    pixels = np.stack([resize(image, INPUT_SIZE, INPUT_SIZE) for image in images])
    np.save(directory / "background.npy", pixels, allow_pickle=False)


def ensure_demo_model() -> Path:
    """Directory holding model.keras, card.json, background.npy and training.json; trains on first use."""
    directory = CACHE / fingerprint()
    if not (directory / "training.json").exists():
        report = train(directory)
        print(f"trained demo model: {report}", flush=True)
    if not (directory / "background.npy").exists():
        write_background(directory)
    return directory


#: The same trained model published as a SageMaker TensorFlow training job writes it: model.tar.gz.
SAGEMAKER_NAME = "shapes-sagemaker"
#: Methods the SavedModel card runs by default: none that reads layers (Grad-CAM), which a SavedModel hides.
SAGEMAKER_METHODS = {"gradient": ["Saliency", "IntegratedGradients", "SmoothGrad", "XRAI"],
                     "perturbation": ["Occlusion", "Rise", "SobolAttributionMethod"]}


def sagemaker_card() -> dict:
    found = card()
    del found["cam_layer"]
    return {**found, "name": SAGEMAKER_NAME, "model_file": "model.tar.gz",
            "description": "The demo CNN as a SageMaker training job writes it: a TensorFlow SavedModel in 1/ of "
                           "model.tar.gz.",
            "artifact": {"signature": "serving_default"}, "default_methods": SAGEMAKER_METHODS}


def ensure_sagemaker_artifact() -> Path:
    """``model.tar.gz`` (the demo model exported as a SavedModel under ``1/``, TensorFlow Serving's layout, as a
    SageMaker TensorFlow training job uploads it), its card and background; made once from the .keras model."""
    import shutil
    import tarfile
    import tempfile

    source = ensure_demo_model()
    directory = source / "sagemaker"
    if not (directory / "model.tar.gz").exists():
        import keras

        model = keras.saving.load_model(source / "model.keras", compile=False, safe_mode=True)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            model.export(os.path.join(scratch, "1"), format="tf_saved_model", verbose=False)
            partial = directory / "model.tar.gz.part"
            with tarfile.open(partial, "w:gz") as archive:
                archive.add(os.path.join(scratch, "1"), arcname="1")
            partial.replace(directory / "model.tar.gz")
    (directory / "card.json").write_text(json.dumps(sagemaker_card(), indent=2))
    shutil.copyfile(source / "background.npy", directory / "background.npy")
    return directory


def sample_images(count: int = 6, seed: int = 2024):
    """Held-out images (never trained on) with their labels and masks, for the demo and tests."""
    return shapes.dataset(count, seed=seed)


def publish(s3_client, bucket: str, directory: Path, name: str = NAME, version: str = VERSION,
            model_file: str = "model.keras") -> None:
    """Upload a model and its card to the model bucket, as a user would."""
    for filename in (model_file, "card.json", "background.npy"):
        s3_client.upload_file(str(directory / filename), bucket, f"models/{name}/{version}/{filename}")


def publish_sagemaker(s3_client, bucket: str) -> None:
    """The SageMaker-style artifact of the demo model, as ``models/shapes-sagemaker/v1/``."""
    publish(s3_client, bucket, ensure_sagemaker_artifact(), SAGEMAKER_NAME, VERSION, "model.tar.gz")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    directory = ensure_demo_model()
    print(directory)
    print((directory / "training.json").read_text())


if __name__ == "__main__":
    main()
