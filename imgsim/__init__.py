"""imgsim: learn a folder of images with a convolutional autoencoder, group it, find similar images.

The public API a notebook uses: `imgsim.train(images, model_dir)` trains a version and opens it,
`imgsim.open(model_dir)` opens a trained one (`.search`, `.similar`, `.labels`, `.duplicates`),
`imgsim.Client(url, token)` asks the same of an `imgsim api` server over HTTP. They load lazily:
`import imgsim` imports neither TensorFlow nor a web framework.
"""

from imgsim.core.config import Settings
from imgsim.core.errors import BusyError, ImageError, ImgsimError, ModelNotFoundError, UrlError
from imgsim.inputs.images import load_image, load_images

__version__ = "0.4.0.dev0"  # 0.4.0 unreleased (CHANGELOG)

# name -> (module, attribute), imported at first use
_LAZY = {
    "open": ("imgsim.api.collection", "open"),
    "train": ("imgsim.api.collection", "train"),
    "Collection": ("imgsim.api.collection", "Collection"),
    "Client": ("imgsim.api.client", "Client"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'imgsim' has no attribute {name!r}")


# `open` is left out of __all__: `from imgsim import *` must not hide the builtin open.
__all__ = [
    "BusyError",
    "Client",
    "Collection",
    "ImageError",
    "ImgsimError",
    "ModelNotFoundError",
    "Settings",
    "UrlError",
    "load_image",
    "load_images",
    "train",
]
