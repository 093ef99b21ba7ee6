"""imgsim: learn a folder of images with a convolutional autoencoder, group it, find similar images."""

from imgsim.core.config import Settings
from imgsim.core.errors import BusyError, ImageError, ImgsimError, ModelNotFoundError, UrlError
from imgsim.inputs.images import load_image, load_images

__version__ = "0.3.0"

__all__ = [
    "BusyError",
    "ImageError",
    "ImgsimError",
    "ModelNotFoundError",
    "Settings",
    "UrlError",
    "load_image",
    "load_images",
]
