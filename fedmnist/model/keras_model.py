"""The Keras model and a fast local training loop.

Models (``--model``): ``mlp`` (784-128-10, the default), ``dense32``
(784-32-10), ``cnn`` (a small convnet), and the two networks of the FedAvg
paper (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data"): ``2nn`` and ``cnn-paper``. Each takes float32
pixels in [0, 1] of shape (batch, 784) and outputs class probabilities of
shape (batch, 10).

Why not ``model.fit``: at this size Keras's per-call set-up (callbacks, data
adapters, progress bars) costs more than the arithmetic; one ``tf.function``
that runs a whole epoch makes a federated round about three times faster (see
docs/performance.md). The loop is ordinary Keras: the same model, optimizer
and loss objects, the same update rule as ``model.fit``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Hide TensorFlow C++ INFO and WARNING notes.

import numpy as np

from fedmnist.model.lean_import import without_optional_imports
from fedmnist.settings import defaults

with without_optional_imports():  # 1.4 s less CPU for every process that trains (fedmnist.model.lean_import).
    import keras
    import tensorflow as tf  # Which imports Keras too.
    from keras import layers

# Every op picks its deterministic kernel, so the same weights, rows and seed give the same update bit for
# bit (docs/reproducibility.md, which has its measured cost; bench/determinism.py turns it off to measure it).
if os.environ.get(defaults.OP_DETERMINISM_VARIABLE, "1") != "0":
    tf.config.experimental.enable_op_determinism()


def build_model(seed: int = defaults.SEED, name: str = defaults.MODEL) -> keras.Model:
    """Model ``name`` (``defaults.MODELS``) with softmax output, weights initialised from ``seed``.

    Every model takes flattened pixels, shape (batch, 784), so data, clients and
    the saved ``.keras`` file work the same whichever is chosen.
    """
    if name not in _MODEL_LAYERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_MODEL_LAYERS)}")
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape=(defaults.IMAGE_PIXELS,), name="pixels"),
            *_MODEL_LAYERS[name](),
            layers.Dense(defaults.NUM_CLASSES, activation="softmax", name="probabilities"),
        ],
        name=f"mnist_{name}",
    )


# The layers between the pixels and the softmax output, per --model.
_MODEL_LAYERS = {
    # 784-128-10: the classic MLP of Flower's and Keras's MNIST tutorials.
    "mlp": lambda: [layers.Dense(defaults.DENSE_HIDDEN_LAYERS["mlp"][0], activation="relu", name="hidden")],
    # 784-32-10: the small dense network of many federated MNIST demos.
    "dense32": lambda: [layers.Dense(defaults.DENSE_HIDDEN_LAYERS["dense32"][0], activation="relu", name="hidden")],
    # A small convnet after keras-io's mnist_convnet, narrowed to 8/16 filters for 2 CPU cores.
    "cnn": lambda: [
        layers.Reshape((28, 28, 1), name="image"),
        layers.Conv2D(8, 3, activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(16, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
    ],
    # The FedAvg paper's "2NN": two hidden layers of 200 ReLU units, 199,210 parameters.
    "2nn": lambda: [
        layers.Dense(width, activation="relu", name=f"hidden{i}")
        for i, width in enumerate(defaults.DENSE_HIDDEN_LAYERS["2nn"], start=1)
    ],
    # The FedAvg paper's CNN: 5x5 convolutions of 32 and 64 channels, each followed by 2x2 max
    # pooling, then 512 ReLU units: 1,663,370 parameters, which "same" padding gives (7x7x64 into
    # the dense layer; "valid" padding would give 4x4x64 and 582,026).
    "cnn-paper": lambda: [
        layers.Reshape((28, 28, 1), name="image"),
        layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(512, activation="relu", name="hidden"),
    ],
}


@dataclass(frozen=True)
class EpochResult:
    """Mean loss and accuracy over the examples seen."""

    loss: float
    accuracy: float


class Trainer:
    """Trains and evaluates one Keras model with compiled whole-epoch loops.

    Adam's moment estimates live as long as the trainer, so a client that
    trains in many rounds keeps them between rounds, as ``model.fit`` on a
    persistent compiled model would.
    """

    def __init__(
        self, model: keras.Model, *, learning_rate: float = defaults.LEARNING_RATE, seed: int = defaults.SEED
    ) -> None:
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(model.trainable_variables)
        self._loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
        self._rng = np.random.default_rng(seed)  # Shuffles the examples every epoch.
        # The seed generators of random layers (Dropout, ...), which reseed sets.
        self._seed_states = [v for v in model.variables if v.name == "seed_generator_state"]

    def get_weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def reset_optimizer(self) -> None:
        """Forget Adam's moments and step count: a fresh start for another client or another run."""
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Draw everything random from ``seed`` on (e.g. a tuple): the examples' order and the random layers'.

        A random layer such as ``Dropout`` draws from its own seed generator, whose state each
        training step advances, so its draws would depend on what this process trained before
        (a worker plays many clients). Its state is set from ``seed`` instead; the models here
        have no random layer, a model someone adds does. ``keras.utils.set_random_seed`` would not
        reach those states, and it clears TensorFlow's caches: a fit took 84 ms instead of 7 ms.
        """
        self._rng = np.random.default_rng(seed)
        if self._seed_states:
            first = int(np.random.SeedSequence(seed).generate_state(1)[0])
            for state in self._seed_states:
                state.assign(np.array([first, 0], dtype=state.dtype))

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)

    def optimizer_state(self) -> list[np.ndarray]:
        """Adam's step count and moment estimates: what a client keeps to go on where it stopped."""
        return [np.asarray(variable.numpy()) for variable in self.optimizer.variables]

    def set_optimizer_state(self, arrays: list[np.ndarray]) -> None:
        """Go on from an ``optimizer_state()`` of a trainer of the same model."""
        for variable, value in zip(self.optimizer.variables, arrays, strict=True):
            variable.assign(value)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = defaults.LOCAL_EPOCHS,
        batch_size: int = defaults.BATCH_SIZE,
        learning_rate: float = defaults.LEARNING_RATE,
        proximal_mu: float = 0.0,
    ) -> EpochResult:
        """Train for ``epochs`` shuffled epochs; return the last epoch's mean loss and accuracy.

        ``x`` holds float32 pixels in [0, 1]; ``y`` integer labels. With
        ``proximal_mu`` > 0 (FedProx) every step also minimises
        ``proximal_term(weights, starting weights, proximal_mu)``, which pulls the
        local model towards the global one it started from; the reported loss
        stays the plain cross-entropy.
        """
        self.optimizer.learning_rate.assign(learning_rate)
        x_tensor, y_tensor = tf.constant(x, tf.float32), tf.constant(y, tf.int32)
        anchor = [tf.constant(v) for v in self.model.trainable_variables]
        mu = tf.constant(proximal_mu, tf.float32)
        result = EpochResult(float("nan"), float("nan"))
        for _ in range(epochs):
            order = tf.constant(self._rng.permutation(len(y)), tf.int32)
            loss_sum, correct = self._train_epoch(
                x_tensor, y_tensor, order, tf.constant(batch_size), anchor, mu, proximal_mu > 0
            )
            result = EpochResult(float(loss_sum) / len(y), float(correct) / len(y))
        return result

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> EpochResult:
        """Mean cross-entropy loss and accuracy on ``x``, ``y`` (one batched pass)."""
        return self.evaluate_with_probabilities(x, y)[0]

    def evaluate_with_probabilities(self, x: np.ndarray, y: np.ndarray) -> tuple[EpochResult, np.ndarray]:
        """``evaluate``, and the class probabilities of every row from the same pass, shape (n, 10)."""
        loss_sum, correct, probabilities = self._evaluate(tf.constant(x, tf.float32), tf.constant(y, tf.int32))
        return EpochResult(float(loss_sum) / len(y), float(correct) / len(y)), probabilities.numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for float32 pixels ``x``, shape (n, 10), in one batched pass."""
        return self._predict(tf.constant(x, tf.float32)).numpy()

    @tf.function(reduce_retracing=True)
    def _predict(self, x: tf.Tensor) -> tf.Tensor:
        return self.model(x, training=False)

    @tf.function(reduce_retracing=True)
    def _train_epoch(
        self,
        x: tf.Tensor,
        y: tf.Tensor,
        order: tf.Tensor,
        batch_size: tf.Tensor,
        anchor: list[tf.Tensor],
        mu: tf.Tensor,
        proximal: bool,
    ):
        # `proximal` is a Python bool: TensorFlow traces one graph with the term, one without.
        num_examples = tf.shape(order)[0]
        loss_sum, correct = tf.constant(0.0), tf.constant(0, tf.int64)
        for start in tf.range(0, num_examples, batch_size):
            batch = order[start : start + batch_size]
            x_batch, y_batch = tf.gather(x, batch), tf.gather(y, batch)
            batch_count = tf.cast(tf.shape(batch)[0], tf.float32)
            with tf.GradientTape() as tape:
                probabilities = self.model(x_batch, training=True)
                batch_loss = self._loss(y_batch, probabilities)
                mean_loss = batch_loss / batch_count  # Gradients of the batch mean, as in model.fit.
                if proximal:
                    mean_loss += proximal_term(self.model.trainable_variables, anchor, mu)
            gradients = tape.gradient(mean_loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            loss_sum += batch_loss
            correct += _count_correct(y_batch, probabilities)
        return loss_sum, correct

    @tf.function(reduce_retracing=True)
    def _evaluate(self, x: tf.Tensor, y: tf.Tensor):
        probabilities = self.model(x, training=False)
        return self._loss(y, probabilities), _count_correct(y, probabilities), probabilities


def proximal_term(weights: list, anchor: list, mu: float | tf.Tensor) -> tf.Tensor:
    """FedProx's ``mu / 2 * ||w - w_global||^2``, summed over every weight array."""
    return 0.5 * mu * tf.add_n([tf.reduce_sum(tf.square(w - a)) for w, a in zip(weights, anchor)])


def _count_correct(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    predictions = tf.argmax(probabilities, axis=1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.int64))


def save_model(model: keras.Model, path: str) -> None:
    """Save a complete ``.keras`` file (architecture + weights), atomically."""
    from fedmnist.common.atomic import atomic_path

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Keras saves each variable with np.array(variable), and NumPy 2 warns once per file that
        # TensorFlow's Variable.__array__ takes no copy argument: TensorFlow's to fix, not a user's.
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        model.save(tmp)  # Keras insists on the .keras suffix, which atomic_path keeps.
