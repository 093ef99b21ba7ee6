"""Encoding files with a model: a stream of decoded batches through an encoder, into unit vectors."""

from __future__ import annotations

import numpy as np

from imgsim.inputs.collection import iter_decoded
from imgsim.storage.engines import normalise


def encode_files(encode, paths: list[str], size: int, workers: int = 2, progress=None, start: float = 0.0,
                 share: float = 1.0):
    """Stream files through `encode` (a batch of images -> latents) batch by batch.

    Returns (positions of the files kept, their L2-normalised vectors, sha1 of their bytes,
    {path: reason} of the unreadable ones). Memory holds two decoded batches at most.
    """
    kept, chunks, hashes, failures = [], [], [], {}
    done = 0
    for indices, images, batch_hashes, batch_failures in iter_decoded(paths, size, batch_size=64, workers=workers):
        if len(images):
            chunks.append(normalise(encode(images)))
        kept.extend(indices)
        hashes.extend(batch_hashes)
        failures.update(batch_failures)
        done += len(indices) + len(batch_failures)
        if progress:
            progress(start + share * done / max(1, len(paths)), f"encoding {done}/{len(paths)} images")
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return kept, vectors, hashes, failures
