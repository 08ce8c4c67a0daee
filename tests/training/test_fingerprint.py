"""What a model computes, as a digest: equal for the same architecture, different otherwise."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
from kfnas.training import measure  # noqa: E402
from kfnas.training.fingerprint import inference_fingerprint  # noqa: E402

pytestmark = pytest.mark.tf

SHAPE = (16, 16, 3)


def convnet(strides: int = 1, filters: int = 8, seed: int = 0) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Conv2D(filters, 3, strides=strides, activation="swish"),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3),
        ]
    )
    model.build((None, *SHAPE))
    return model


def fingerprint(model: tf_keras.Model, shape: tuple[int, ...] = SHAPE, batch: int = 1) -> str:
    return inference_fingerprint(measure.trace_inference(model, shape, batch_size=batch))


def test_the_same_architecture_has_one_fingerprint_whatever_its_weights_and_names():
    first, again = convnet(seed=0), convnet(seed=1)  # Keras names the second one's layers _1
    assert first.layers[0].name != again.layers[0].name
    assert not (first.layers[0].kernel.numpy() == again.layers[0].kernel.numpy()).all()
    assert fingerprint(first) == fingerprint(again)
    assert len(fingerprint(first)) == 64  # sha256 hex


def test_what_changes_the_computation_changes_the_fingerprint():
    base = fingerprint(convnet())
    assert fingerprint(convnet(strides=2)) != base  # an attribute (strides)
    assert fingerprint(convnet(filters=16)) != base  # a weight shape
    assert fingerprint(convnet(), shape=(32, 32, 3)) != base  # the input
    assert fingerprint(convnet(), batch=2) != base
