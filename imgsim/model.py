"""The convolutional autoencoder: a named encoder and decoder, and the trainer that fits them.

The encoder pools every stage's feature map (multi-scale global average pooling) into one
bottleneck vector, the latent used for similarity. Training reconstructs each image from its
latent and also pulls together the latents of two augmented views of one image while keeping
the batch spread out (VICReg's invariance, variance and covariance terms), so that crops, flips
and colour shifts of one scene land close together: pixels alone do not say what an image shows.
"""

from __future__ import annotations

import math
import os


def import_tensorflow_quietly():
    """Import TensorFlow with its native start-up log lines (oneDNN, absl) kept off the terminal.

    TF_CPP_MIN_LOG_LEVEL does not silence them in current releases, so file descriptor 2 is
    pointed at /dev/null for the import alone; a failing import still raises normally.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.constant(0)  # the first op logs too
        return tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


tf = import_tensorflow_quietly()
import keras  # noqa: E402
from keras import layers  # noqa: E402

STAGE_FILTERS = (32, 64, 128, 256)
# Extra 3x3 residual convolutions per stage, after its strided one: capacity where maps are small.
STAGE_DEPTH = (0, 1, 1, 1)
# The decoder's filters per up-sampling stage. It only has to regularise the latent, and at full
# resolution it cost as much as both encoder passes together: 300 MFLOPs an image at (128, 64, 32,
# 16) against the encoder's 60.
DECODER_FILTERS = (64, 32, 16, 8)
GRID = 4  # the last stage is also pooled to a GRID x GRID layout
# Each image is brought to zero mean and unit variance (over its pixels and channels) before the
# stages, and its mean colour goes to the bottleneck beside them: the stages then learn the image's
# pattern and texture rather than its light, which a crop or an exposure change alters. Measured
# on the 600 photos (precision@10): 0.952 -> 0.991, and the two grey textures it confused, grass
# and gravel, 0.50 / 0.61 -> 0.86 / 0.97 (benchmarks/quality-results.txt). False builds the old model.
STANDARDISE = True


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


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


def build_encoder(image_size: int, latent_dim: int) -> keras.Model:
    inp = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(inp)
    pooled = []
    if STANDARDISE:
        pooled.append(layers.GlobalAveragePooling2D(name="mean_colour")(x))
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="standardise")(x)
    for i, filters in enumerate(STAGE_FILTERS):
        x = conv_block(x, filters, f"stage{i + 1}", STAGE_DEPTH[i])
        pooled.append(layers.GlobalAveragePooling2D(name=f"pool{i + 1}")(x))
    # Global pooling keeps what is there (colour, texture) but not where; a coarse grid of the
    # last stage keeps the layout too, which shapes such as digits and faces need.
    side = image_size // 2 ** len(STAGE_FILTERS)
    grid = layers.AveragePooling2D(pool_size=max(1, side // GRID), name="grid_pool")(x)
    pooled.append(layers.Flatten(name="layout")(grid))
    x = layers.Concatenate(name="multiscale")(pooled)
    latent = layers.Dense(latent_dim, name="latent", dtype="float32")(x)
    return keras.Model(inp, latent, name="encoder")


def build_decoder(image_size: int, latent_dim: int) -> keras.Model:
    side = image_size // 2 ** len(STAGE_FILTERS)
    inp = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(side * side * STAGE_FILTERS[-1], activation="relu", name="expand")(inp)
    x = layers.Reshape((side, side, STAGE_FILTERS[-1]), name="grid")(x)
    for i, filters in enumerate(DECODER_FILTERS):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"up{i + 1}")(x)
        x = layers.BatchNormalization(name=f"up{i + 1}_bn")(x)
        x = layers.Activation("relu", name=f"up{i + 1}_relu")(x)
    out = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="pixels", dtype="float32")(x)
    return keras.Model(inp, out, name="decoder")


def build_autoencoder(image_size: int = 128, latent_dim: int = 128) -> keras.Model:
    """`keras.Model(image, decoder(encoder(image)))` with the encoder and decoder as named sub-models."""
    encoder = build_encoder(image_size, latent_dim)
    decoder = build_decoder(image_size, latent_dim)
    inp = keras.Input((image_size, image_size, 3), name="image")
    return keras.Model(inp, decoder(encoder(inp)), name="autoencoder")


# Views of one image that should share a latent. No mirroring: a mirrored digit, letter or layout
# is often another thing (flip invariance cost digits 0.95 -> 0.89 precision@10).
VIEWS = {
    "area": (0.30, 1.0),        # crop: fraction of the image's area kept
    "aspect": (3 / 4, 4 / 3),   # crop aspect ratio, log-uniform
    "degrees": 10.0,            # turn, either way
    "brightness": 0.2,          # added, in [0, 1] pixel units
    "contrast": 0.25,           # x (1 +- c) around each image's mean
    "saturation": 0.4,          # x (1 +- s) away from each pixel's grey
    "channel_gain": 0.1,        # each colour channel x (1 +- g): colour casts
    "grey": 0.2,                # probability of a greyscale view
}


def augment(images, seed, views: dict = VIEWS):
    """Random views of a batch in [0, 1] (or uint8): one projective resample per image, then light and colour.

    Crop, zoom, translation and turn are fused into one transform matrix per image and applied by
    a single `ImageProjectiveTransformV3` (bilinear, reflected borders), so a view costs one
    resample and runs inside the compiled train step. `seed` is a shape-[2] int32 tensor: the same
    seed gives the same views (the held-out measure relies on it).
    """
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        images = tf.cast(images, tf.float32) * (1 / 255)
    images = tf.cast(images, tf.float32)
    n, size = tf.shape(images)[0], tf.shape(images)[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 10)

    def uniform(i, low, high, shape=None):
        return tf.random.stateless_uniform(shape if shape is not None else [n], seeds[i], low, high)

    area = uniform(0, *views["area"])
    log_aspect = uniform(1, math.log(views["aspect"][0]), math.log(views["aspect"][1]))
    w = tf.minimum(tf.sqrt(area * tf.exp(log_aspect)), 1.0)  # crop side, as a fraction of the image's
    h = tf.minimum(tf.sqrt(area / tf.exp(log_aspect)), 1.0)
    cx = 0.5 + (uniform(2, -0.5, 0.5)) * (1.0 - w)  # crop centre, kept inside the image
    cy = 0.5 + (uniform(3, -0.5, 0.5)) * (1.0 - h)
    angle = uniform(4, -1.0, 1.0) * (views["degrees"] * math.pi / 180)
    s = tf.cast(size, tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # output pixel (x, y) -> input pixel: centre + R(angle) . diag(w, h) . ((x, y) - size / 2)
    a0, a1, b0, b1 = cos * w, -sin * h, sin * w, cos * h
    a2 = cx * s - (a0 + a1) * s / 2
    b2 = cy * s - (b0 + b1) * s / 2
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.stack([size, size]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")

    grey = tf.reduce_mean(out, axis=-1, keepdims=True)
    column = [n, 1, 1, 1]
    saturation = uniform(5, 1 - views["saturation"], 1 + views["saturation"], column)
    gains = uniform(6, 1 - views["channel_gain"], 1 + views["channel_gain"], [n, 1, 1, 3])
    out = (grey + saturation * (out - grey)) * gains
    to_grey = tf.cast(uniform(7, 0.0, 1.0, column) < views["grey"], tf.float32)
    out = to_grey * tf.reduce_mean(out, axis=-1, keepdims=True) + (1 - to_grey) * out
    contrast = uniform(8, 1 - views["contrast"], 1 + views["contrast"], column)
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = mean + contrast * (out - mean) + uniform(9, -views["brightness"], views["brightness"], column)
    return tf.clip_by_value(out, 0.0, 1.0)


# The loss terms' weights (Trainer's docstring); a dict so that experiments can override one entry.
LOSS_WEIGHTS = {"reconstruction": 10.0, "invariance": 1.0, "variance": 1.0, "covariance": 0.04}


class Trainer(keras.Model):
    """Fits an autoencoder's encoder and decoder; only the autoencoder itself is saved.

    loss = reconstruction * MSE(view, decoded) + invariance * MSE(z1, z2)
           + variance * hinge(std(z)) + covariance * offdiag(cov(z))

    Batches arrive as uint8 (or [0, 1] floats) at training size; the two views are made inside the
    step (`augment`), so they are compiled with it and cost no Python per image. The reconstruction
    MSE of [0, 1] pixels is two orders of magnitude smaller than the other terms; weighted 10 it
    still shapes the latent (digits precision@10 0.89 -> 0.93 on a 400-image subset).
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

    def compute_losses(self, images, training: bool):
        seed = tf.cast(keras.random.randint([2], 0, 2**30, seed=self.seed_generator), tf.int32)
        view1 = augment(images, seed, self.views)
        view2 = augment(images, seed + 1, self.views)
        z1 = self.encoder(view1, training=training)
        z2 = self.encoder(view2, training=training)
        recon = self.decoder(z1, training=training)
        reconstruction = tf.reduce_mean(tf.square(view1 - tf.cast(recon, "float32")))
        invariance = tf.reduce_mean(tf.square(z1 - z2))
        spread = variance_term(z1) + variance_term(z2)
        cov = covariance_term(z1) + covariance_term(z2)
        w = self.loss_weights
        total = w["reconstruction"] * reconstruction + w["invariance"] * invariance + w["variance"] * spread \
            + w["covariance"] * cov
        return total, {"reconstruction": reconstruction, "invariance": invariance, "spread": spread}

    def train_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            total, parts = self.compute_losses(images, training=True)
            scaled = self.optimizer.scale_loss(total)
        variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self.record(total, parts)

    def test_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        total, parts = self.compute_losses(images, training=False)
        return self.record(total, parts)

    def record(self, total, parts):
        self.trackers["loss"].update_state(total)
        for name, value in parts.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def variance_term(z):
    """Hinge on each latent dimension's standard deviation across the batch (VICReg): no collapse."""
    std = tf.sqrt(tf.math.reduce_variance(z, axis=0) + 1e-4)
    return tf.reduce_mean(tf.nn.relu(1.0 - std))


def covariance_term(z):
    """Sum of squared off-diagonal covariances over the dimension count (VICReg): decorrelated dimensions."""
    n = tf.cast(tf.shape(z)[0], z.dtype)
    d = tf.cast(tf.shape(z)[1], z.dtype)
    z = z - tf.reduce_mean(z, axis=0)
    cov = tf.matmul(z, z, transpose_a=True) / tf.maximum(n - 1.0, 1.0)
    off = cov - tf.linalg.diag(tf.linalg.diag_part(cov))
    return tf.reduce_sum(tf.square(off)) / d


def encoder_of(autoencoder: keras.Model) -> keras.Model:
    return autoencoder.get_layer("encoder")


def decoder_of(autoencoder: keras.Model) -> keras.Model:
    return autoencoder.get_layer("decoder")


def compile_encoder(encoder: keras.Model):
    """A traced inference function for any batch size: far less per-call overhead than `predict`."""
    size = encoder.input_shape[1]
    spec = tf.TensorSpec((None, size, size, 3), tf.float32)
    # autograph off: nothing to convert, and its ast.parse in a background thread (the dashboard's
    # preload) raced Streamlit's own in the script thread ("AST constructor recursion depth
    # mismatch", a CPython 3.11 bug with ast.parse in two threads at once; imgsim.threads now also
    # serialises every parse in the dashboard)
    fn = tf.function(lambda images: encoder(images, training=False), input_signature=[spec], autograph=False)
    return lambda images: fn(tf.convert_to_tensor(images, tf.float32)).numpy()


def load_autoencoder(path) -> keras.Model:
    """The saved autoencoder; a file Keras cannot rebuild (edited config, other version) is ModelNotFoundError."""
    from .errors import ModelNotFoundError

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        model.get_layer("encoder"), model.get_layer("decoder")
    except Exception as exc:  # Keras raises assorted types for a config it cannot rebuild
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelNotFoundError(f"{path}: Keras cannot load this model ({type(exc).__name__}: {first})") from None
    return model


def load_encoder(path) -> keras.Model:
    return load_autoencoder(path).get_layer("encoder")
