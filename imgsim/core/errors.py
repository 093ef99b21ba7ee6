"""The errors imgsim raises for bad input; front ends show their message as one line."""


class ImgsimError(Exception):
    """Base class: a problem the user can fix, shown without a traceback."""


class ImageError(ImgsimError):
    """An image could not be read: unreadable, corrupt, too large or not an allowed format."""


class UrlError(ImageError):
    """A URL was refused (scheme, destination, size, time) or could not be fetched."""


class ModelNotFoundError(ImgsimError):
    """No trained model version exists yet, or none is intact."""


class DamagedIndexError(ModelNotFoundError):
    """A vector engine's or the records' stored data is missing, damaged or does not match its state."""


class NotFoundError(ImgsimError):
    """An image id, group or version that the collection does not have."""


class BusyError(ImgsimError):
    """Another training or indexing run holds the model folder's lock."""
