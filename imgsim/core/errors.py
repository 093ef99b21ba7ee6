"""The errors imgsim raises for bad input; front ends show their message as one line."""


class ImgsimError(Exception):
    """Base class: a problem the user can fix, shown without a traceback."""


class ImageError(ImgsimError):
    """An image could not be read: unreadable, corrupt, too large or not an allowed format."""


class UrlError(ImageError):
    """A URL was refused (scheme, destination, size, time) or could not be fetched.

    Its message is what a visitor may read: for a destination refused or not found, only "not
    allowed", so that the field tells nobody how the server resolves internal names. `detail`
    says why, for the person running imgsim (the command line prints it; the server logs it).
    """

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


class ModelNotFoundError(ImgsimError):
    """No trained model version exists yet, or none is intact."""


class DamagedIndexError(ModelNotFoundError):
    """A vector engine's or the records' stored data is missing, damaged or does not match its state."""


class NotFoundError(ImgsimError):
    """An image id, group or version that the collection does not have."""


class BusyError(ImgsimError):
    """Another training or indexing run holds the model folder's lock."""
