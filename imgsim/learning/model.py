"""The convolutional autoencoder: a named encoder and decoder, and the trainer that fits them.

The encoder pools every stage's feature map (multi-scale global average pooling) into one
bottleneck vector, the latent. Training reconstructs each image from its latent and also pulls
together the latents of two augmented views of one image while keeping the batch spread out
(VICReg's invariance, variance and covariance terms), so that crops, turns and colour shifts of
one scene land close together: pixels alone do not say what an image shows. What is searched is
formed from the latents of the image and of its mirror image (`descriptor`, `MirrorInvariance`).
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


@keras.saving.register_keras_serializable(package="imgsim")
class GridPooling(layers.Layer):
    """Average pooling to a fixed `cells` x `cells` grid whatever the map's side (adaptive average pooling).

    The bins are those of PyTorch's adaptive_avg_pool2d; a side that is a multiple of `cells` gives
    exactly `AveragePooling2D(side // cells)`. So the encoder's layout part keeps its size for the
    small crops training shows it (a 64 px crop of a 128 px model) and for its own input alike.
    """

    def __init__(self, cells: int, **kwargs):
        super().__init__(**kwargs)
        self.cells = int(cells)

    def bins(self, side: int) -> np.ndarray:
        """(cells, side) averaging weights: row i averages pixels floor(i * side / cells) .. ceil((i + 1) * side / cells)."""
        out = np.zeros((self.cells, side), np.float32)
        for i in range(self.cells):
            start, stop = (i * side) // self.cells, -(-((i + 1) * side) // self.cells)
            out[i, start:stop] = 1.0 / (stop - start)
        return out

    def call(self, x):
        rows = ops.convert_to_tensor(self.bins(x.shape[1]), dtype=x.dtype)
        cols = ops.convert_to_tensor(self.bins(x.shape[2]), dtype=x.dtype)
        return ops.einsum("jw,biwc->bijc", cols, ops.einsum("ih,bhwc->biwc", rows, x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.cells, self.cells, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "cells": self.cells}


@keras.saving.register_keras_serializable(package="imgsim")
class GeMPooling(layers.Layer):
    """Generalised-mean pooling over the map, (mean x^p)^(1/p), with p learned (Radenovic et al., 2018).

    p = 1 is the average, large p the maximum: a crop's strongest responses are more alike to the
    whole scene's than its average is. Computed in float32; the inputs are ReLU outputs (>= 0).
    """

    def __init__(self, p: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_p = float(p)

    def build(self, input_shape):
        self.p = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_p), name="p")

    def call(self, x):
        p = ops.clip(ops.cast(self.p, "float32"), 1.0, 8.0)
        x = ops.maximum(ops.cast(x, "float32"), 1e-6)
        return ops.power(ops.mean(ops.power(x, p), axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "p": self.initial_p}


@keras.saving.register_keras_serializable(package="imgsim")
class MirrorInvariance(layers.Layer):
    """The identity in the network; it carries how the searched vector treats mirror images (`compile_encoder`).

    Training sees the latent alone. What is searched is `descriptor`: with invariance v > 0, the latents of the
    image and of its mirror image, summed, beside their difference weighted 1 - v. Kept in the model file so
    that whatever encodes with a version (a query, `index`, a Ray worker) forms the same vector; a model saved
    before it has no such layer and is searched by its latent alone.
    """

    def __init__(self, invariance: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.invariance = float(invariance)

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "invariance": self.invariance}


def mirror_invariance(encoder: keras.Model) -> float:
    """The encoder's MirrorInvariance (0 for a model saved without one)."""
    found = [layer.invariance for layer in encoder.layers if isinstance(layer, MirrorInvariance)]
    return found[0] if found else 0.0


def descriptor(encode, images, invariance: float):
    """What is searched: `encode(images)` (a backend function of a batch) for invariance 0; otherwise the latents
    a of the images and b of their mirror images (one batch through the network) as [a + b, (1 - invariance)(a - b)],
    or a + b alone at 1. Cosine similarity then weighs (a + b)(a' + b') + (1 - v)^2 (a - b)(a' - b')."""
    if not invariance:
        return encode(images)
    n = ops.shape(images)[0]
    both = encode(ops.concatenate([images, ops.flip(images, axis=2)], axis=0))
    return mirror_pair(both[:n], both[n:], invariance)


def mirror_pair(plain, mirrored, invariance: float):
    """The searched vector from the latents of images and of their mirror images (see `descriptor`)."""
    if invariance >= 1:
        return plain + mirrored
    return ops.concatenate([plain + mirrored, (1.0 - invariance) * (plain - mirrored)], axis=1)


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
        if architecture.pooling == "gem":
            pooled.append(GeMPooling(name=f"pool{i + 1}", dtype="float32")(x))
        else:
            pooled.append(layers.GlobalAveragePooling2D(name=f"pool{i + 1}")(x))
    # Global pooling keeps what is there (colour, texture) but not where; a coarse grid of the
    # last stage keeps the layout too, which shapes such as digits and faces need. Adaptive, so
    # that training can show the encoder crops smaller than its input (Trainer's local views).
    side = image_size // 2 ** len(stages)
    grid = GridPooling(min(architecture.grid, side), name="grid_pool")(x)
    pooled.append(layers.Flatten(name="layout")(grid))
    x = layers.Concatenate(name="multiscale")(pooled)
    latent = layers.Dense(latent_dim, name="latent", dtype="float32")(x)
    latent = MirrorInvariance(architecture.mirror_invariance, name="mirror", dtype="float32")(latent)
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
            ("area", "aspect", "degrees", "brightness", "contrast", "saturation", "channel_gain", "grey", "flip")}


def loss_weights_of(settings: Settings) -> dict:
    return {name: getattr(settings, f"loss_{name}") for name in ("reconstruction", "invariance", "variance", "covariance")}


VIEWS = views_of(DEFAULTS)
LOSS_WEIGHTS = loss_weights_of(DEFAULTS)


def augment(images, seed, views: dict = VIEWS, size: int | None = None):
    """Random views of a batch in [0, 1] (or uint8): one affine resample per image, then light and colour.

    Crop, zoom, translation and turn are fused into one transform matrix per image and applied by
    a single `keras.ops.image.affine_transform` (bilinear, reflected borders), so a view costs one
    resample and runs inside the compiled train step on any backend. `seed` is an int or a
    `keras.random.SeedGenerator`: the same int gives the same views (the held-out measure relies
    on it); the numbers drawn differ between backends. `size` (at most the images' side) makes
    smaller views: the crop is resampled from the full image straight to `size` pixels.
    """
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = keras.random.SeedGenerator(int(seed))
    images = ops.convert_to_tensor(images)
    if images.dtype == "uint8":
        images = ops.cast(images, "float32") * (1 / 255)
    images = ops.cast(images, "float32")
    shape = ops.shape(images)
    n, side = shape[0], images.shape[1]
    size = side if size is None else int(size)

    def uniform(low, high, shape=None):
        return keras.random.uniform(shape if shape is not None else (n,), low, high, dtype="float32", seed=seed)

    area = uniform(*views["area"])
    log_aspect = uniform(math.log(views["aspect"][0]), math.log(views["aspect"][1]))
    w = ops.minimum(ops.sqrt(area * ops.exp(log_aspect)), 1.0)  # crop side, as a fraction of the image's
    h = ops.minimum(ops.sqrt(area / ops.exp(log_aspect)), 1.0)
    cx = 0.5 + uniform(-0.5, 0.5) * (1.0 - w)  # crop centre, kept inside the image
    cy = 0.5 + uniform(-0.5, 0.5) * (1.0 - h)
    angle = uniform(-1.0, 1.0) * (views["degrees"] * math.pi / 180)
    if views.get("flip", 0.0) > 0:  # a mirrored view: the crop's x axis reversed
        w = w * (1.0 - 2.0 * ops.cast(uniform(0.0, 1.0) < views["flip"], "float32"))
    s, o = float(side), float(size)
    cos, sin = ops.cos(angle), ops.sin(angle)
    # output pixel (x, y) -> input pixel: centre + R(angle) . diag(w, h) . ((x, y) - size / 2) . side / size
    a0, a1, b0, b1 = cos * w * (s / o), -sin * h * (s / o), sin * w * (s / o), cos * h * (s / o)
    a2 = cx * s - (a0 + a1) * o / 2
    b2 = cy * s - (b0 + b1) * o / 2
    zeros = ops.zeros_like(a0)
    transforms = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="reflect",
                                     data_format="channels_last")
    if size != side:  # the transform's output has the input's side; the view fills its top-left corner
        out = out[:, :size, :size, :]

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


def local_size_at(size: int, image_size: int, local_size: int) -> int:
    """The small crops' side when the views are `size` px: `local_size` scaled with them, a multiple of 8, at least 8."""
    return max(8, 8 * round(local_size * size / image_size / 8))


class Trainer(keras.Model):
    """Fits an autoencoder's encoder and decoder; only the autoencoder itself is saved.

    loss = reconstruction * MSE(view, decoded) + invariance * MSE(z, target)
           + variance * hinge(std(z)) + covariance * offdiag(cov(z))

    Batches arrive as uint8 (or [0, 1] floats); the views are made inside the step (`augment`), so
    they are compiled with it and cost no Python per image. Two views of each image at the batch's
    side (`view_size`, the batch's own unless set smaller) are pulled towards each other's latent;
    `local_crops` small crops of `local_area` at `local_size` px (multi-crop, as in SwAV and DINO)
    are pulled towards both views' latents, so that a part of a scene finds the whole. With
    `teacher_momentum` > 0 the targets are the latents of a teacher encoder, an exponential moving
    average of this one (BYOL, DINO), which training only uses. VICReg's variance and covariance
    terms keep the views' latents spread. The reconstruction MSE of [0, 1] pixels is two orders of
    magnitude smaller than the other terms; weighted 10 it still shapes the latent (digits
    precision@10 0.89 -> 0.93 on a 400-image subset).

    The step is Keras' own (`call` makes the views and latents, `compute_loss` weighs them), so it
    runs on TensorFlow, JAX and PyTorch alike, with loss scaling under mixed precision. The loss
    terms are computed in float32 whatever the policy. `sizes` lists the view sides the trainer
    will be set to (`view_size`): the encoder is rebuilt over the same layers for each.
    """

    def __init__(self, autoencoder: keras.Model, seed: int = 0, weights: dict | None = None, views: dict | None = None,
                 local_crops: int = 0, local_size: int = 64, local_area=(0.05, 0.3), teacher_momentum: float = 0.0,
                 sizes=(), **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = autoencoder
        self.encoder = autoencoder.get_layer("encoder")
        self.decoder = autoencoder.get_layer("decoder")
        self.image_size = int(self.encoder.input_shape[1])
        self.views = dict(VIEWS if views is None else views)
        self.local_views = dict(self.views, area=tuple(local_area))
        self.local_crops, self.local_size = int(local_crops), int(local_size)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_weights = {**LOSS_WEIGHTS, **(weights or {})}
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "reconstruction", "invariance", "spread")}
        self.momentum = float(teacher_momentum)
        self.teacher = None
        if self.momentum > 0:
            self.teacher = keras.models.clone_model(self.encoder)
            self.teacher.set_weights(self.encoder.get_weights())
            self.teacher.trainable = False  # its weights move by the average in `call`, never by gradients
        self.view_size = None  # None: the batch's own side
        wanted = {self.image_size, *(int(s) for s in sizes)}
        if self.local_crops:
            wanted |= {local_size_at(s, self.image_size, self.local_size) for s in set(wanted)}
        self.sized = {str(s): self.resized(self.encoder, s) for s in sorted(wanted)}
        self.teachers = {} if self.teacher is None else {str(s): self.resized(self.teacher, s) for s in sorted(wanted)}

    @staticmethod
    def resized(encoder: keras.Model, size: int) -> keras.Model:
        """The encoder for `size` px inputs: the same layers and weights on another input (its layout pools adapt)."""
        if size == encoder.input_shape[1]:
            return encoder
        return keras.models.clone_model(encoder, input_tensors=keras.Input((size, size, 3), name="image"),
                                        clone_function=lambda layer: layer)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        size = int(self.view_size or images.shape[1])
        encoder = self.sized[str(size)]
        view1 = augment(images, self.seed_generator, self.views, size)
        view2 = augment(images, self.seed_generator, self.views, size)
        z1 = encoder(view1, training=training)
        z2 = encoder(view2, training=training)
        recon = self.decoder(z1, training=training)
        if size != self.image_size:  # decoded at the model's size: compared at the view's
            factor = self.image_size // size
            recon = ops.average_pool(recon, factor, factor)
        local = ops.zeros((0, ops.shape(z1)[1]), z1.dtype)
        if self.local_crops:
            small = local_size_at(size, self.image_size, self.local_size)
            crops = ops.concatenate([augment(images, self.seed_generator, self.local_views, small)
                                     for _ in range(self.local_crops)])
            local = self.sized[str(small)](crops, training=training)
        if self.teacher is not None:
            teacher = self.teachers[str(size)]
            t1 = ops.stop_gradient(teacher(view1, training=False))
            t2 = ops.stop_gradient(teacher(view2, training=False))
            if training:
                m = self.momentum
                for t, s in zip(self.teacher.weights, self.encoder.weights):
                    t.assign(m * t + (1.0 - m) * ops.cast(s, t.dtype))
        else:
            t1, t2 = z1, z2
        return view1, z1, z2, recon, local, t1, t2

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        view1, z1, z2, recon, local, t1, t2 = (ops.cast(t, "float32") for t in y_pred)
        reconstruction = ops.mean(ops.square(view1 - recon))
        pairs = [ops.mean(ops.square(z1 - t2)), ops.mean(ops.square(z2 - t1))]
        if self.local_crops:
            n = ops.shape(z1)[0]
            for k in range(self.local_crops):
                crop = local[k * n:(k + 1) * n]
                pairs += [ops.mean(ops.square(crop - t1)), ops.mean(ops.square(crop - t2))]
        invariance = sum(pairs) / len(pairs)
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
    """images (n, size, size, 3) float32 -> what is searched (`descriptor`) as numpy, compiled for the backend in use.

    Far less per-call overhead than `predict`. TensorFlow: one traced function for any batch size.
    JAX: one jitted function, compiled per batch size, so batches are padded to 1, 8 or 64 rows
    (chunks of 64 beyond). PyTorch: eager, without gradients.
    """
    name = keras.backend.backend()
    invariance = mirror_invariance(encoder)
    if name == "tensorflow":
        import tensorflow as tf

        size = encoder.input_shape[1]
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
        # autograph off: nothing to convert, and its ast.parse in a background thread (the dashboard's
        # preload) raced Streamlit's own in the script thread ("AST constructor recursion depth
        # mismatch", a CPython 3.11 bug with ast.parse in two threads at once; pages/patches.py now also
        # serialises every parse in the dashboard)
        fn = tf.function(lambda images: descriptor(lambda x: encoder(x, training=False), images, invariance),
                         input_signature=[spec], autograph=False)
        return lambda images: fn(tf.convert_to_tensor(images, tf.float32)).numpy()
    if name == "jax":
        import jax

        fn = jax.jit(lambda t, f, x: descriptor(lambda y: encoder.stateless_call(t, f, y, training=False)[0], x,
                                                invariance))

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
            images = ops.convert_to_tensor(np.asarray(images, np.float32))
            return ops.convert_to_numpy(descriptor(lambda x: encoder(x, training=False), images, invariance))

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
