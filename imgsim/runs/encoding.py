"""The one encoding pass of a run: training and indexing both call `encode_collection`, here or on Ray."""

from __future__ import annotations

import os

from imgsim.learning.encoding import encode_files
from imgsim.search import rerank


def encode_collection(model, paths: list[str], size: int, *, workers: int = 2, ray: str | None = None, progress=None,
                      start: float = 0.0, share: float = 1.0, features: list | None = None):
    """Every file through the model's encoder: (positions kept, unit vectors, sha1s, {path: reason}).

    `model` is an autoencoder in memory (a training run's) or a `.keras` file (a version's). With
    `ray` (a cluster's HOST:PORT) the batches are encoded on that cluster (imgsim.runs.distributed),
    with the same return value in the same order. With `features` (a list), each kept image's local
    features (imgsim.search.rerank) are appended to it, found on the batches the encoder reads (with
    Ray, on a second decoding here: the cluster returns latents only).
    """
    if ray:
        from imgsim.runs.distributed import encode_files as encode_on_ray

        encoded = encode_on_ray(ray, model, paths, size, progress, start, share)
        if features is not None:
            features.extend(rerank.describe_files([paths[p] for p in encoded[0]], size, workers))
        return encoded
    from imgsim.learning.model import compile_encoder, encoder_of, load_autoencoder

    if isinstance(model, (str, os.PathLike)):
        model = load_autoencoder(model)
    encode = compile_encoder(encoder_of(model))
    if features is not None:
        encode = rerank.describing(encode, features)
    return encode_files(encode, paths, size, workers, progress, start, share)
