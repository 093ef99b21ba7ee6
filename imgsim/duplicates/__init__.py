"""Near-duplicates: the copies in a collection, grouped, with one suggested keeper each; moving, never deleting.

Exact copies (the same bytes) are found from the records' sha1 alone, without the model. Near
copies (re-encoded, resized, slightly cropped or turned, lighter or darker) are pairs of images
whose latents are at least `threshold` cosine-similar among each image's k nearest neighbours in
the version's vector engine, searched a chunk at a time (never an N x N matrix), and whose
perceptual hashes then agree (PHASH_MAX_DISTANCE): the latents find the candidates at any
collection size, the hash rejects look-alikes that are not copies. Edits that move the whole
picture's hash (a border or letterbox, a caption bar, a screenshot's window, a 20 % crop) are
caught two ways: a latent pair the hash rejects may still be confirmed by its geometry (ORB
keypoints agree on one similarity transform, under which one picture's content lies inside the
other's: a crop, never two overlapping views), and the pictures inside their frames (uniform
borders and caption bars trimmed) are hashed too, so a framed copy whose latent is far away is
still proposed, then confirmed the same way. Each link says why (MATCHES). Pairs are joined
into groups (connected components), so an exact group with a near copy of it becomes one near group that
holds the exact copies too: a person deciding what to keep sees every copy of a picture at once.
A group whose members all share one sha1 is reported as exact.

Moving is undoable: `move_duplicates` writes its JSON log of every (from, to) before it moves a
file, and `undo_moves` reads that log back, so even a run killed half-way can be undone.

The modules: finding (candidates, pairs, groups), verifying (the verdicts and their evidence),
moving (plan, move, undo, the log), report (CSV); the image features they share live in
imgsim.features.
"""

from imgsim.duplicates.finding import (
    DEFAULT_THRESHOLD,
    MANIFEST_KEY,
    DuplicateScan,
    find_duplicates,
    scan_budget,
    scan_duplicates,
)
from imgsim.duplicates.groups import DuplicateGroup, Member
from imgsim.duplicates.moving import UndoIncomplete, check_target, move_duplicates, undo_moves
from imgsim.duplicates.report import duplicates_csv
from imgsim.duplicates.results import StoredScan, scan_and_save, scanning
from imgsim.duplicates.results import load as load_scan
from imgsim.duplicates.verifying import MATCHES

__all__ = ["DEFAULT_THRESHOLD", "MANIFEST_KEY", "MATCHES", "DuplicateGroup", "DuplicateScan", "Member", "StoredScan", "UndoIncomplete",
           "check_target", "duplicates_csv", "find_duplicates", "load_scan", "move_duplicates", "scan_and_save", "scan_budget",
           "scan_duplicates", "scanning", "undo_moves"]
