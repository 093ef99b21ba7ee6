"""Settings: defaults in one frozen dataclass, overridden by environment variables, then flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


def data_home(environ=None) -> Path:
    """Where imgsim keeps models and the demo collection: $IMGSIM_HOME, else the per-user data folder.

    The per-user folder is platformdirs' (~/.local/share/imgsim on Linux), never the folder the
    package is installed in. A checkout's scripts/run.sh sets IMGSIM_HOME to the checkout, so
    `models/` stays beside the code there; the tests use a folder of their own (tests/conftest.py).
    """
    environ = os.environ if environ is None else environ
    home = environ.get("IMGSIM_HOME", "").strip()
    return Path(home).expanduser().absolute() if home else Path(platformdirs.user_data_dir("imgsim", appauthor=False))


def cache_home(environ=None) -> Path:
    """Where imgsim keeps what it can rebuild (JAX's compiled programs): $IMGSIM_HOME/cache when IMGSIM_HOME
    is set, else the per-user cache folder (platformdirs': ~/.cache/imgsim on Linux)."""
    environ = os.environ if environ is None else environ
    if environ.get("IMGSIM_HOME", "").strip():
        return data_home(environ) / "cache"
    return Path(platformdirs.user_cache_dir("imgsim", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Where things live and how a model is trained.

    `model_dir`, `images` and `engine` come from IMGSIM_MODEL_DIR, IMGSIM_IMAGES and IMGSIM_ENGINE when set;
    the folders default to `models` and `demo` under `data_home()`.

    A field whose metadata has a `help` text is a training knob: it is recorded in each version's
    manifest (`training_dict`) and is a flag of `imgsim train` (imgsim.cli), with no other list to edit.
    """

    model_dir: Path = field(default_factory=lambda: data_home() / "models")
    images: Path = field(default_factory=lambda: data_home() / "demo")
    image_size: int = field(default=128, metadata={"help": "model input size in pixels, a multiple of 16"})
    latent_dim: int = field(default=128, metadata={"help": "latent vector size"})
    epochs: int = field(default=12, metadata={"help": "maximum epochs; early stopping may end sooner"})
    batch_size: int = field(default=32, metadata={"help": "images per training step"})
    clusters: int = field(default=4, metadata={"help": "number of KMeans groups"})
    seed: int = field(default=0, metadata={"help": "random seed of the split, the views and the groups"})
    validation_split: float = field(default=0.1, metadata={"help": "share of the images held out to measure"})
    patience: int = field(default=3, metadata={"help": "epochs without a better held-out measure before stopping"})
    workers: int = 2
    # The training budget in optimiser steps: None is imgsim.learning.fit's measured default, 0 epochs only.
    min_steps: int | None = field(default=None, metadata={"help": "at least this many steps (0: epochs only)"})
    max_steps: int | None = field(default=None, metadata={"help": "at most this many steps"})
    # A time budget instead: the steps follow the machine's speed (a GPU or a big CPU gets more), bounded
    # by min_steps and max_steps; the manifest records the steps run. None or 0: the step budget alone.
    train_seconds: float | None = field(default=None, metadata={
        "help": "train for about this many seconds, whatever the steps (0: the step budget)"})
    engine: str = "auto"  # vector engine: auto (exact below CROSSOVER, faiss above) or a name in imgsim.storage.engines.ENGINES
    follow_links: bool = False  # follow links to folders and links that leave the images folder when scanning it
    # Re-check a query's top answers by geometry (imgsim.search.rerank): training and indexing then also keep
    # each image's local features; off, neither does and the latents alone order the results.
    recheck: bool = True
    # How the network learns (imgsim.learning.model, imgsim.learning.fit). All of them go into each version's manifest
    # (training_dict), so that a version can be retrained exactly; `help` says what each one is.
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam's learning rate, constant"})
    # Measured on the photos at 408 steps (precision@10): 1e-3 0.952, 2e-3 0.875, warmed up and cosine-decayed 0.949.
    stage_filters: tuple[int, ...] = field(default=(32, 64, 128, 256), metadata={"help": "encoder filters per stage"})
    # Extra 3x3 residual convolutions per stage, after its strided one: capacity where maps are small.
    stage_depth: tuple[int, ...] = field(default=(0, 1, 1, 1), metadata={"help": "residual convolutions per stage"})
    # The decoder only has to regularise the latent; at (128, 64, 32, 16) it cost 300 MFLOPs an image,
    # as much as both encoder passes together (60 each).
    decoder_filters: tuple[int, ...] = field(default=(64, 32, 16, 8), metadata={"help": "decoder filters per stage"})
    grid: int = field(default=4, metadata={"help": "the last stage is also pooled to a grid x grid layout"})
    # Each image is brought to zero mean and unit variance before the stages, its mean colour going to
    # the bottleneck beside them: photos precision@10 0.952 -> 0.991 (benchmarks/quality-results.txt).
    standardise: bool = field(default=True, metadata={"help": "standardise each image before the stages"})
    pooling: str = field(default="average", metadata={
        "help": "each stage's global pooling: average, or gem (generalised mean, its power learned)"})
    # The two views of an image that should share a latent (imgsim.learning.model.augment). No mirroring: a
    # mirrored digit or layout is often another thing (flips cost digits 0.95 -> 0.89 precision@10).
    view_area: tuple[float, float] = field(default=(0.30, 1.0), metadata={"help": "crop: share of the area kept"})
    view_aspect: tuple[float, float] = field(default=(3 / 4, 4 / 3), metadata={"help": "crop aspect, log-uniform"})
    view_degrees: float = field(default=10.0, metadata={"help": "turn, either way"})
    view_brightness: float = field(default=0.2, metadata={"help": "added, in [0, 1] pixel units"})
    view_contrast: float = field(default=0.25, metadata={"help": "x (1 +- c) around each image's mean"})
    view_saturation: float = field(default=0.4, metadata={"help": "x (1 +- s) away from each pixel's grey"})
    view_channel_gain: float = field(default=0.1, metadata={"help": "each channel x (1 +- g): colour casts"})
    view_grey: float = field(default=0.2, metadata={"help": "probability of a greyscale view"})
    view_flip: float = field(default=0.0, metadata={"help": "probability of a mirrored view"})
    # What is searched (imgsim.learning.model.compile_encoder): the latents of the image and of its mirror image,
    # summed (the same for both) beside their difference weighted 1 - this: 0 is the latent alone; 1 makes an image
    # and its mirror image one. A mirrored photograph shows the same scene; a mirrored digit may be another digit.
    # Default trainings with 0 and 0.6 (precision@k, the latents alone): photos-hard-8 0.783 -> 0.911, digits 0.982 ->
    # 0.976. On the same weights 0.6 kept most of 1's gain on photographs (photos-hard-8 0.936 against 0.945) where 1
    # cost a preview model of digits 0.05 (docs/results.md, "An image and its mirror image").
    mirror_invariance: float = field(default=0.6, metadata={
        "help": "search an image and its mirror image alike: 0 no, 1 as one image, between partly"})
    # Multi-crop (imgsim.learning.model.Trainer): small crops beside the two views, each pulled to both views' latents.
    local_crops: int = field(default=0, metadata={"help": "small crops per image beside the two views (0: none)"})
    local_size: int = field(default=64, metadata={"help": "the small crops' side in pixels, a multiple of 8"})
    local_area: tuple[float, float] = field(default=(0.05, 0.3), metadata={"help": "small crops: share of the area kept"})
    # A momentum teacher (BYOL, DINO): the targets are the latents of an average of the encoder's past weights.
    teacher_momentum: float = field(default=0.0, metadata={
        "help": "the teacher encoder's moving-average momentum per step (0: no teacher, the views' own latents)"})
    # Progressive resizing: smaller, cheaper views for the first epochs, the full size for the rest.
    early_size: int = field(default=0, metadata={"help": "the views' side for the first epochs (0: image_size throughout)"})
    early_share: float = field(default=0.0, metadata={"help": "share of the epochs trained at early_size"})
    lr_schedule: str = field(default="constant", metadata={"help": "learning rate: constant, or cosine (decayed to 0)"})
    # The loss terms' weights (imgsim.learning.model.Trainer). Reconstruction weighted 10: digits 0.89 -> 0.93 precision@10.
    loss_reconstruction: float = field(default=10.0, metadata={"help": "weight of the reconstruction MSE"})
    loss_invariance: float = field(default=1.0, metadata={"help": "weight of the two views' latent MSE"})
    loss_variance: float = field(default=1.0, metadata={"help": "weight of VICReg's variance hinge"})
    loss_covariance: float = field(default=0.04, metadata={"help": "weight of VICReg's covariance term"})

    def __post_init__(self):
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser())
        object.__setattr__(self, "images", Path(self.images).expanduser())
        if not 16 <= self.image_size <= 512 or self.image_size % 16:
            raise ValueError(f"image size must be a multiple of 16 between 16 and 512, got {self.image_size}")
        if not 2 <= self.latent_dim <= 4096:
            raise ValueError(f"latent size must be between 2 and 4096, got {self.latent_dim}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 1 <= self.clusters <= 100:
            raise ValueError(f"clusters must be between 1 and 100, got {self.clusters}")
        if not isinstance(self.engine, str) or not self.engine.isidentifier():
            raise ValueError(f"vector engine must be a name, got {self.engine!r}")  # which names: imgsim.storage.engines
        if not 0 <= self.validation_split < 0.5:
            raise ValueError(f"validation split must be in [0, 0.5), got {self.validation_split}")
        for name in ("stage_filters", "stage_depth", "decoder_filters", "view_area", "view_aspect", "local_area"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists when read back from a manifest
        if len(self.stage_depth) != len(self.stage_filters) or not self.stage_filters:
            raise ValueError(f"stage_depth needs one entry per stage ({len(self.stage_filters)}), got {self.stage_depth}")
        if self.image_size % 2 ** len(self.stage_filters):
            raise ValueError(f"image size must be a multiple of {2 ** len(self.stage_filters)} for "
                             f"{len(self.stage_filters)} stages, got {self.image_size}")
        if self.train_seconds is not None and not self.train_seconds >= 0:
            raise ValueError(f"train seconds must be 0 (the step budget) or more, got {self.train_seconds}")
        if self.pooling not in ("average", "gem"):
            raise ValueError(f"pooling must be average or gem, got {self.pooling!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"learning rate schedule must be constant or cosine, got {self.lr_schedule!r}")
        if self.local_crops < 0 or self.local_size < 8 or self.local_size % 8:
            raise ValueError(f"need local_crops >= 0 and local_size a multiple of 8, got {self.local_crops}, {self.local_size}")
        if not 0 <= self.teacher_momentum < 1:
            raise ValueError(f"teacher momentum must be in [0, 1), got {self.teacher_momentum}")
        if self.early_size and (self.early_size < 16 or self.image_size % self.early_size
                                or self.early_size % 2 ** len(self.stage_filters)):
            raise ValueError(f"early size must divide the image size ({self.image_size}) and be a multiple of "
                             f"{2 ** len(self.stage_filters)}, got {self.early_size}")
        if not 0 <= self.early_share < 1:
            raise ValueError(f"early share must be in [0, 1), got {self.early_share}")
        if not 0 <= self.mirror_invariance <= 1:
            raise ValueError(f"mirror invariance must be in [0, 1], got {self.mirror_invariance}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults, then IMGSIM_MODEL_DIR / IMGSIM_IMAGES, then the non-None `overrides`."""
        environ = os.environ if environ is None else environ
        values = {}
        if environ.get("IMGSIM_MODEL_DIR"):
            values["model_dir"] = environ["IMGSIM_MODEL_DIR"]
        if environ.get("IMGSIM_IMAGES"):
            values["images"] = environ["IMGSIM_IMAGES"]
        if environ.get("IMGSIM_ENGINE"):
            values["engine"] = environ["IMGSIM_ENGINE"].strip().lower()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def training_dict(self) -> dict:
        """The settings that shape a model, as stored in a version's manifest."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in ((k, getattr(self, k)) for k in TRAINING_FIELDS)}

    def to_json(self) -> str:
        """Every setting as JSON (folders as text): what a background training run is started with."""
        return json.dumps({f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        """The settings `to_json` wrote; a ValueError names what is wrong (not JSON, an unknown field, a bad value)."""
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"settings are not JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError("settings must be a JSON object")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(map(repr, unknown))}")
        return cls(**values)


def jsonable(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


# What shapes a model: a version's manifest records them, and Settings(**manifest["settings"]) retrains it.
TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(Settings) if "help" in f.metadata)
