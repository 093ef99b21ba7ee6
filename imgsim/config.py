"""Settings: defaults in one frozen dataclass, overridden by environment variables, then flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


def data_home(environ=None) -> Path:
    """Where imgsim keeps models and the demo collection: $IMGSIM_HOME, else the per-user data folder.

    The per-user folder is platformdirs' (~/.local/share/imgsim on Linux), never the folder the
    package is installed in. A checkout's scripts/run.sh and test.sh set IMGSIM_HOME to the
    checkout, so `models/` stays beside the code there.
    """
    environ = os.environ if environ is None else environ
    home = environ.get("IMGSIM_HOME", "").strip()
    return Path(home).expanduser().absolute() if home else Path(platformdirs.user_data_dir("imgsim", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Where things live and how a model is trained.

    `model_dir`, `images` and `engine` come from IMGSIM_MODEL_DIR, IMGSIM_IMAGES and IMGSIM_ENGINE when set;
    the folders default to `models` and `demo` under `data_home()`.
    """

    model_dir: Path = field(default_factory=lambda: data_home() / "models")
    images: Path = field(default_factory=lambda: data_home() / "demo")
    image_size: int = 128
    latent_dim: int = 128
    epochs: int = 12
    batch_size: int = 32
    clusters: int = 4
    seed: int = 0
    validation_split: float = 0.1
    patience: int = 3
    workers: int = 2
    min_steps: int | None = None  # training budget in optimiser steps (None: imgsim.fit's measured default; 0: epochs only)
    max_steps: int | None = None
    engine: str = "auto"  # vector engine: auto (exact below engines.CROSSOVER, faiss above), exact, faiss, milvus
    follow_links: bool = False  # follow links to folders and links that leave the images folder when scanning it

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
        if self.engine not in ("auto", "exact", "faiss", "milvus"):
            raise ValueError(f"engine must be one of auto, exact, faiss, milvus; got {self.engine!r}")
        if not 0 <= self.validation_split < 0.5:
            raise ValueError(f"validation split must be in [0, 0.5), got {self.validation_split}")

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
        keys = ("image_size", "latent_dim", "epochs", "batch_size", "clusters", "seed", "validation_split", "patience",
                "min_steps", "max_steps")
        return {k: getattr(self, k) for k in keys}
