"""The convolutional autoencoder: a named encoder and decoder, and the trainer that fits them.

The encoder pools every stage's feature map (multi-scale global average pooling) into one
bottleneck vector, the latent used for similarity. Training reconstructs each image from its
latent and also pulls together the latents of two augmented views of one image while keeping
the batch spread out (VICReg's invariance, variance and covariance terms), so that crops, flips
and colour shifts of one scene land close together: pixels alone do not say what an image shows.
"""

from __future__ import annotations

import math

import numpy as np

from imgsim.core.config import Settings
from imgsim.learning.backend import gpu_available, import_keras

keras = import_keras()
from keras import layers, ops  # noqa: E402

# The architecture and the training's defaults are Settings fields (stage_filters, view_*, loss_*, ...):
# recorded in each version's manifest. What each default was measured against is in config.py.
DEFAULTS = Settings(model_dir=".", images=".")


def use_mixed_precision_if_gpu() -> str:
    """Mixed precision on a GPU (tensor cores), float32 on the CPU where it would only be slower."""
    policy = "mixed_float16" if gpu_available() else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def conv_block(x, filters: int, name: str, depth: int = 0):
    x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    for j in range(depth):
        # depthwise-separable: a full 3x3 convolution here would cost 9 times the multiplies
        y = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_res{j + 1}_conv")(x)
        y = layers.BatchNormalization(name=f"{name}_res{j + 1}_bn")(y)
        x = layers.Add(name=f"{name}_res{j + 1}_add")([x, y])
        x = layers.Activation("relu", name=f"{name}_res{j + 1}_relu")(x)
    return x


def build_encoder(image_size: int, latent_dim: int, architecture: Settings = DEFAULTS) -> keras.Model:
    stages = architecture.stage_filters
    inp = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed", dtype="float32")(inp)
    pooled = []
    if architecture.standardise:
        # float32 under mixed precision too: a mean and variance over 49,152 values in float16 lose digits
        pooled.append(layers.GlobalAveragePooling2D(name="mean_colour", dtype="float32")(x))
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="standardise",
                                      dtype="float32")(x)
    for i, filters in enumerate(stages):
        x = conv_block(x, filters, f"stage{i + 1}", architecture.stage_depth[i])
        pooled.append(layers.GlobalAveragePooling2D(name=f"pool{i + 1}")(x))
    # Global pooling keeps what is there (colour, texture) but not where; a coarse grid of the
    # last stage keeps the layout too, which shapes such as digits and faces need.
    side = image_size // 2 ** len(stages)
    grid = layers.AveragePooling2D(pool_size=max(1, side // architecture.grid), name="grid_pool")(x)
    pooled.append(layers.Flatten(name="layout")(grid))
    x = layers.Concatenate(name="multiscale")(pooled)
    latent = layers.Dense(latent_dim, name="latent", dtype="float32")(x)
    return keras.Model(inp, latent, name="encoder")


def build_decoder(image_size: int, latent_dim: int, architecture: Settings = DEFAULTS) -> keras.Model:
    stages = architecture.stage_filters
    side = image_size // 2 ** len(stages)
    inp = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(side * side * stages[-1], activation="relu", name="expand")(inp)
    x = layers.Reshape((side, side, stages[-1]), name="grid")(x)
    for i, filters in enumerate(architecture.decoder_filters):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"up{i + 1}")(x)
        x = layers.BatchNormalization(name=f"up{i + 1}_bn")(x)
        x = layers.Activation("relu", name=f"up{i + 1}_relu")(x)
    out = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="pixels", dtype="float32")(x)
    return keras.Model(inp, out, name="decoder")


def build_autoencoder(image_size: int = 128, latent_dim: int = 128, architecture: Settings = DEFAULTS) -> keras.Model:
    """`keras.Model(image, decoder(encoder(image)))` with the encoder and decoder as named sub-models.

    `architecture` gives stage_filters, stage_depth, decoder_filters, grid and standardise.
    """
    encoder = build_encoder(image_size, latent_dim, architecture)
    decoder = build_decoder(image_size, latent_dim, architecture)
    inp = keras.Input((image_size, image_size, 3), name="image")
    return keras.Model(inp, decoder(encoder(inp)), name="autoencoder")


def views_of(settings: Settings) -> dict:
    """The view settings as `augment` takes them."""
    return {name: getattr(settings, f"view_{name}") for name in
            ("area", "aspect", "degrees", "brightness", "contrast", "saturation", "channel_gain", "grey")}


def loss_weights_of(settings: Settings) -> dict:
    return {name: getattr(settings, f"loss_{name}") for name in ("reconstruction", "invariance", "variance", "covariance")}


VIEWS = views_of(DEFAULTS)
LOSS_WEIGHTS = loss_weights_of(DEFAULTS)


def augment(images, seed, views: dict = VIEWS):
    """Random views of a batch in [0, 1] (or uint8): one affine resample per image, then light and colour.

    Crop, zoom, translation and turn are fused into one transform matrix per image and applied by
    a single `keras.ops.image.affine_transform` (bilinear, reflected borders), so a view costs one
    resample and runs inside the compiled train step on any backend. `seed` is an int or a
    `keras.random.SeedGenerator`: the same int gives the same views (the held-out measure relies
    on it); the numbers drawn differ between backends.
    """
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = keras.random.SeedGenerator(int(seed))
    images = ops.convert_to_tensor(images)
    if images.dtype == "uint8":
        images = ops.cast(images, "float32") * (1 / 255)
    images = ops.cast(images, "float32")
    shape = ops.shape(images)
    n, size = shape[0], images.shape[1]

    def uniform(low, high, shape=None):
        return keras.random.uniform(shape if shape is not None else (n,), low, high, dtype="float32", seed=seed)

    area = uniform(*views["area"])
    log_aspect = uniform(math.log(views["aspect"][0]), math.log(views["aspect"][1]))
    w = ops.minimum(ops.sqrt(area * ops.exp(log_aspect)), 1.0)  # crop side, as a fraction of the image's
    h = ops.minimum(ops.sqrt(area / ops.exp(log_aspect)), 1.0)
    cx = 0.5 + uniform(-0.5, 0.5) * (1.0 - w)  # crop centre, kept inside the image
    cy = 0.5 + uniform(-0.5, 0.5) * (1.0 - h)
    angle = uniform(-1.0, 1.0) * (views["degrees"] * math.pi / 180)
    s = float(size)
    cos, sin = ops.cos(angle), ops.sin(angle)
    # output pixel (x, y) -> input pixel: centre + R(angle) . diag(w, h) . ((x, y) - size / 2)
    a0, a1, b0, b1 = cos * w, -sin * h, sin * w, cos * h
    a2 = cx * s - (a0 + a1) * s / 2
    b2 = cy * s - (b0 + b1) * s / 2
    zeros = ops.zeros_like(a0)
    transforms = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="reflect",
                                     data_format="channels_last")

    grey = ops.mean(out, axis=-1, keepdims=True)
    column = (n, 1, 1, 1)
    saturation = uniform(1 - views["saturation"], 1 + views["saturation"], column)
    gains = uniform(1 - views["channel_gain"], 1 + views["channel_gain"], (n, 1, 1, 3))
    out = (grey + saturation * (out - grey)) * gains
    to_grey = ops.cast(uniform(0.0, 1.0, column) < views["grey"], "float32")
    out = to_grey * ops.mean(out, axis=-1, keepdims=True) + (1 - to_grey) * out
    contrast = uniform(1 - views["contrast"], 1 + views["contrast"], column)
    mean = ops.mean(out, axis=(1, 2, 3), keepdims=True)
    out = mean + contrast * (out - mean) + uniform(-views["brightness"], views["brightness"], column)
    return ops.clip(out, 0.0, 1.0)


class Trainer(keras.Model):
    """Fits an autoencoder's encoder and decoder; only the autoencoder itself is saved.

    loss = reconstruction * MSE(view, decoded) + invariance * MSE(z1, z2)
           + variance * hinge(std(z)) + covariance * offdiag(cov(z))

    Batches arrive as uint8 (or [0, 1] floats) at training size; the two views are made inside the
    step (`augment`), so they are compiled with it and cost no Python per image. The reconstruction
    MSE of [0, 1] pixels is two orders of magnitude smaller than the other terms; weighted 10 it
    still shapes the latent (digits precision@10 0.89 -> 0.93 on a 400-image subset).

    The step is Keras' own (`call` makes the views and latents, `compute_loss` weighs them), so it
    runs on TensorFlow, JAX and PyTorch alike, with loss scaling under mixed precision. The loss
    terms are computed in float32 whatever the policy.
    """

    def __init__(self, autoencoder: keras.Model, seed: int = 0, weights: dict | None = None, views: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = autoencoder
        self.encoder = autoencoder.get_layer("encoder")
        self.decoder = autoencoder.get_layer("decoder")
        self.views = dict(VIEWS if views is None else views)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_weights = {**LOSS_WEIGHTS, **(weights or {})}
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "reconstruction", "invariance", "spread")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        view1 = augment(images, self.seed_generator, self.views)
        view2 = augment(images, self.seed_generator, self.views)
        z1 = self.encoder(view1, training=training)
        z2 = self.encoder(view2, training=training)
        return view1, z1, z2, self.decoder(z1, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        view1, z1, z2, recon = (ops.cast(t, "float32") for t in y_pred)
        reconstruction = ops.mean(ops.square(view1 - recon))
        invariance = ops.mean(ops.square(z1 - z2))
        spread = variance_term(z1) + variance_term(z2)
        cov = covariance_term(z1) + covariance_term(z2)
        w = self.loss_weights
        total = w["reconstruction"] * reconstruction + w["invariance"] * invariance + w["variance"] * spread \
            + w["covariance"] * cov
        for name, value in (("loss", total), ("reconstruction", reconstruction), ("invariance", invariance),
                            ("spread", spread)):
            self.trackers[name].update_state(value)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def variance_term(z):
    """Hinge on each latent dimension's standard deviation across the batch (VICReg): no collapse. float32."""
    z = ops.cast(z, "float32")
    std = ops.sqrt(ops.var(z, axis=0) + 1e-4)
    return ops.mean(ops.relu(1.0 - std))


def covariance_term(z):
    """Sum of squared off-diagonal covariances over the dimension count (VICReg): decorrelated dimensions.

    float32 whatever the input: under mixed precision a float16 covariance overflows (65,504) for
    latents of a few hundred, and its squares far sooner.
    """
    z = ops.cast(z, "float32")
    n = ops.cast(ops.shape(z)[0], "float32")
    d = ops.cast(ops.shape(z)[1], "float32")
    z = z - ops.mean(z, axis=0)
    cov = ops.matmul(ops.transpose(z), z) / ops.maximum(n - 1.0, 1.0)
    off = cov * (1.0 - ops.eye(ops.shape(z)[1], dtype="float32"))
    return ops.sum(ops.square(off)) / d


def encoder_of(autoencoder: keras.Model) -> keras.Model:
    return autoencoder.get_layer("encoder")


def decoder_of(autoencoder: keras.Model) -> keras.Model:
    return autoencoder.get_layer("decoder")


def compile_encoder(encoder: keras.Model):
    """images (n, size, size, 3) float32 -> latents as numpy, compiled for the backend in use.

    Far less per-call overhead than `predict`. TensorFlow: one traced function for any batch size.
    JAX: one jitted function, compiled per batch size, so batches are padded to 1, 8 or 64 rows
    (chunks of 64 beyond). PyTorch: eager, without gradients.
    """
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        size = encoder.input_shape[1]
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
        # autograph off: nothing to convert, and its ast.parse in a background thread (the dashboard's
        # preload) raced Streamlit's own in the script thread ("AST constructor recursion depth
        # mismatch", a CPython 3.11 bug with ast.parse in two threads at once; pages/patches.py now also
        # serialises every parse in the dashboard)
        fn = tf.function(lambda images: encoder(images, training=False), input_signature=[spec], autograph=False)
        return lambda images: fn(tf.convert_to_tensor(images, tf.float32)).numpy()
    if name == "jax":
        import jax

        fn = jax.jit(lambda t, f, x: encoder.stateless_call(t, f, x, training=False)[0])

        def encode(images):
            # the weights as they are now (a held-out measure encodes between epochs), not when compiled
            trainable = [v.value for v in encoder.trainable_variables]
            fixed = [v.value for v in encoder.non_trainable_variables]
            images = np.asarray(images, np.float32)
            n, out = len(images), []
            for start in range(0, max(n, 1), 64):
                chunk = images[start:start + 64]
                rows = next(b for b in (1, 8, 64) if b >= len(chunk))
                padded = np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), np.float32)])
                out.append(np.asarray(fn(trainable, fixed, padded))[:len(chunk)])
            return np.concatenate(out)[:n]

        return encode
    import torch

    def encode(images):
        with torch.no_grad():
            return ops.convert_to_numpy(encoder(ops.convert_to_tensor(np.asarray(images, np.float32)), training=False))

    return encode


def load_autoencoder(path) -> keras.Model:
    """The saved autoencoder; a file Keras cannot rebuild (edited config, other version) is ModelNotFoundError.

    A `.keras` file holds the layers' configuration and weights only, so one trained under any
    backend loads under any other.
    """
    from imgsim.core.errors import ModelNotFoundError

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        model.get_layer("encoder"), model.get_layer("decoder")
    except Exception as exc:  # Keras raises assorted types for a config it cannot rebuild
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelNotFoundError(f"{path}: Keras cannot load this model ({type(exc).__name__}: {first})") from None
    return model


def load_encoder(path) -> keras.Model:
    return load_autoencoder(path).get_layer("encoder")
