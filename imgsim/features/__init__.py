"""Hand-crafted image features shared by the capabilities: perceptual hashes, the picture inside its frame,
ORB keypoints and the geometry that says one picture is a copy of another.

Near-copy verification (imgsim.duplicates) and search re-ranking build on them; they know nothing
of models, versions or records: a path (or pixels) in, a feature out. Search's re-check uses
`local` (small binary keypoints of a model's input, fast enough for every image and every query)
and `matching` (one query's keypoints against many candidates' at once).
"""

from imgsim.features.geometry import MIN_COVER, Agreement, agreement, cover, same_scene
from imgsim.features.hashes import picture_hash
from imgsim.features.keypoints import MIN_INLIERS, VERIFY_SIDE, Keypoints, keypoints, keypoints_of
from imgsim.features.pixels import content_box, edge_run, frame_run, read_pixels
from imgsim.features.signature import Signature, bits_apart, phash_bits, signature, signature_of

__all__ = ["MIN_COVER", "MIN_INLIERS", "VERIFY_SIDE", "Agreement", "Keypoints", "Signature", "agreement", "bits_apart",
           "content_box", "cover", "edge_run", "frame_run", "keypoints", "keypoints_of", "phash_bits",
           "picture_hash", "read_pixels", "same_scene", "signature", "signature_of"]
