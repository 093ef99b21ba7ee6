"""Hand-crafted image features shared by the capabilities: perceptual hashes, the picture inside its frame,
ORB keypoints and the geometry that says one picture is a copy of another.

Near-copy verification (imgsim.duplicates) and search re-ranking build on them; they know nothing
of models, versions or records: a path (or pixels) in, a feature out.
"""

from imgsim.features.geometry import MIN_COVER, cover, same_scene
from imgsim.features.hashes import content_hash, picture_hash
from imgsim.features.keypoints import MIN_INLIERS, VERIFY_SIDE, Keypoints, keypoints
from imgsim.features.pixels import content_box, frame_run, read_pixels

__all__ = ["MIN_COVER", "MIN_INLIERS", "VERIFY_SIDE", "Keypoints", "content_box", "content_hash", "cover", "frame_run",
           "keypoints", "picture_hash", "read_pixels", "same_scene"]
