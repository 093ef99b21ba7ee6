"""The command line's arguments: one function a command, a flag for every training knob of Settings."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from imgsim.core.config import TRAINING_FIELDS, Settings
from imgsim.storage.engines import CROSSOVER, ENGINES, engine_choices, engine_names


def with_model_dir(p):
    p.add_argument("--model-dir", type=Path, help="model folder (default: $IMGSIM_MODEL_DIR, else models/ in the data folder)")
    return p


def with_engine(p, what):
    p.add_argument("--engine", choices=engine_choices(),
                   help=f"vector engine {what} (default: $IMGSIM_ENGINE or auto: exact below "
                        f"{CROSSOVER:,} images, faiss above); " + "; ".join(
                            f"{e.name}: {e.summary}" for e in ENGINES.values()))


def with_follow_links(p):
    p.add_argument("--follow-links", action="store_true", default=None,
                   help="follow links to folders and links that leave the images folder (default: list them as skipped)")


def with_ray(p):
    p.add_argument("--ray", metavar="HOST:PORT", help="encode on this Ray cluster (ray start --head prints its "
                   "address; the images must be at the same paths on every worker; needs imgsim[ray])")


def with_recheck(p, help):
    p.add_argument("--no-recheck", dest="recheck", action="store_false", help=help)


def add_serve(sub):
    p = with_model_dir(sub.add_parser(
        "serve", help="start the dashboard (training a first model in the background when there is none)",
        description="Start the dashboard on http://HOST:PORT. With no model yet, a first one trains in the background "
                    "(on the demo collection unless --images or $IMGSIM_IMAGES names a folder) and its progress "
                    "prints here. Options after -- go to `streamlit run`."))
    p.add_argument("--images", type=Path, help="folder of images (default: $IMGSIM_IMAGES, else the demo collection)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; README, 'Sharing the dashboard')")
    p.add_argument("--port", type=int, help="port (default 8501)")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def add_api(sub):
    p = with_model_dir(sub.add_parser("api", help="serve the HTTP API for other programs (needs imgsim[api])",
                                      description="Search, label and watch the collection over HTTP; OpenAPI docs "
                                                  "at /docs. Beyond 127.0.0.1 it is read-only unless "
                                                  "IMGSIM_API_TOKEN is set (docs/security.md)."))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1; docs/scale.md)")


def add_demo(sub):
    p = sub.add_parser("demo", help="build the demo collection from photographs shipped with scikit-image")
    p.add_argument("--out", type=Path, help="folder to write (default: $IMGSIM_IMAGES, else the demo collection in the data folder)")
    p.add_argument("-n", "--count", type=int, default=600, help="number of images (default 600)")
    p.add_argument("--seed", type=int, default=0)


def add_train(sub):
    p = with_model_dir(sub.add_parser("train", help="train a new model version on a folder of images"))
    with_ray(p)
    p.add_argument("--images", type=Path, help="folder of images (default: $IMGSIM_IMAGES, else the demo collection in the data folder)")
    with_follow_links(p)
    with_engine(p, "for the new version")
    p.add_argument("--background", action="store_true",
                   help="train in a background process (as the dashboard does) and return at once; see `imgsim status`")
    p.add_argument("--demo-first", action="store_true",
                   help="with --background: build the demo collection in the images folder first")
    with_recheck(p, "keep no local features of the images (queries are then ordered by the latents alone)")
    add_training_flags(p)


def add_index(sub):
    p = with_model_dir(sub.add_parser("index", help="encode added files and drop removed ones, without retraining"))
    p.add_argument("--images", type=Path, help="folder of images (default: the folder the model was trained on)")
    with_ray(p)
    with_follow_links(p)
    with_engine(p, "to move the collection into, without re-encoding (default: keep the version's)")
    with_recheck(p, "find no local features for the added images (their results keep the latents' order)")


def add_query(sub):
    p = with_model_dir(sub.add_parser("query", help="find the images most similar to each SOURCE"))
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image path or http(s) URL")
    p.add_argument("-n", type=int, default=8, help="number of results (default 8)")
    p.add_argument("--scope", choices=("cluster", "all"), default="cluster",
                   help="search the query's predicted group (default) or the whole collection")
    p.add_argument("--json", action="store_true", help="one JSON object per source, one per line")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write the query and its results as a picture grid")
    p.add_argument("--engine", choices=engine_names(),
                   help="search with another engine than the version's (its vectors are moved in memory)")
    with_recheck(p, "order the results by the latents alone: no re-check of the top answers by geometry "
                    "(--json gives each re-checked result's agreeing keypoints as `inliers`)")


def add_clusters(sub):
    p = with_model_dir(sub.add_parser("clusters", help="show the groups; --name names one; --export writes path,group,name"))
    p.add_argument("--name", action="append", metavar="G=NAME", default=[],
                   help="name group G (repeatable; an empty NAME removes the name)")
    p.add_argument("--export", type=Path, metavar="FILE.csv")
    p.add_argument("--silhouette", action="store_true", help="silhouette score for k = 2..10, to help choose k")


def add_labels(sub):
    p = sub.add_parser("labels", help="label every image from a few: suggest, set, review, export")
    actions = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    def action(name, help):
        return with_model_dir(actions.add_parser(name, help=help))

    q = action("suggest", "the images to label next, best first")
    q.add_argument("-n", type=int, default=10, help="how many (default 10)")
    q.add_argument("--json", action="store_true", help="one JSON object a line: path, suggested, confidence, reason")
    q = action("set", "give images a label (yours: propagation never changes it)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q = action("clear", "remove your label from images")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q = action("import", "labels from a CSV of path,label rows (an export's CSV too: its own labels only)")
    q.add_argument("file", type=Path, metavar="FILE.csv")
    q = action("review", "likely mistakes (labels the neighbours disagree with) and outliers, worst first")
    q.add_argument("--json", action="store_true")
    q = action("export", "every image's label: JSON lines, CSV, or one folder per label")
    q.add_argument("--json", action="store_true",
                   help="one JSON object a line: path, label, source, confidence (the probability it is right)")
    q.add_argument("--csv", type=Path, metavar="FILE", help="the same as CSV")
    q.add_argument("--folders", type=Path, metavar="DIR", help="copy each labelled image to DIR/<label>/")
    q.add_argument("--link", action="store_true", help="with --folders: hard links instead of copies")
    q.add_argument("--force", action="store_true", help="with --folders: write into a folder that is not empty")
    q.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="leave out propagated labels less likely right than P (0..1, default 0: every image)")
    q = action("accept", "make every propagated label at or above a probability of being right your own (undoable)")
    q.add_argument("--min-confidence", type=float, default=0.9, metavar="P",
                   help="0..1 (default 0.9): the calibrated probability that the label is right")
    action("undo", "revert the last labelling change")
    action("status", "how many images are labelled by you, by propagation, and unsure")


def add_duplicates(sub):
    p = with_model_dir(sub.add_parser("duplicates", help="exact and near copies in the collection (nothing is deleted)"))
    p.add_argument("--threshold", type=float, metavar="T",
                   help="cosine similarity above which two images are near copies (default: the version's measured one)")
    p.add_argument("--json", action="store_true", help="one JSON object per group, one per line")
    p.add_argument("--export", type=Path, metavar="FILE.csv", help="group, path, keep/duplicate, score as CSV")
    p.add_argument("--rescan", action="store_true",
                   help="scan the version again (default: show its last finished scan, made after training)")


def add_eval(sub):
    p = with_model_dir(sub.add_parser("eval", help="precision@k on a labelled folder (sub-folder = label) against baselines"))
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("-k", type=int, default=10)


def add_status(sub):
    p = with_model_dir(sub.add_parser("status", help="the background training run's progress"))
    p.add_argument("--follow", action="store_true", help="print progress until the run ends")
    p.add_argument("--every", type=float, default=5.0, metavar="S", help="with --follow: seconds between lines (default 5)")


def add_versions(sub):
    p = with_model_dir(sub.add_parser("versions", help="list model versions; --use ID makes one current"))
    p.add_argument("--use", metavar="ID")


def add_prune(sub):
    p = with_model_dir(sub.add_parser("prune", help="remove old model versions and the files only they used"))
    p.add_argument("--keep", type=int, default=2, metavar="N",
                   help="versions to keep, newest first (default 2); the current one is always kept too")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, and remove nothing")


# Each command's arguments, in the order `imgsim --help` lists them.
ADDERS = (add_serve, add_api, add_demo, add_train, add_index, add_query, add_clusters, add_labels, add_duplicates, add_eval,
          add_status, add_versions, add_prune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgsim", description="Find similar images in your own collection.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each training knob of Settings (a field with help text): a new knob needs no edit here."""
    group = parser.add_argument_group("training knobs", "recorded in each version's manifest")
    kinds = typing.get_type_hints(Settings)
    for knob in dataclasses.fields(Settings):
        if knob.name not in TRAINING_FIELDS:
            continue
        flag, kind = "--" + knob.name.replace("_", "-"), kinds[knob.name]
        default = knob.default if knob.default is not dataclasses.MISSING else knob.default_factory()
        shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in (
            default if isinstance(default, tuple) else (default,)))
        text = (knob.metadata["help"] + ("" if default is None else f" (default {shown})")).replace("%", "%%")
        parts = [a for a in typing.get_args(kind) if a is not type(None)]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(kind) is tuple:
            nargs = "+" if Ellipsis in parts else len(parts)
            parts = [a for a in parts if a is not Ellipsis]
            group.add_argument(flag, type=parts[0], nargs=nargs, metavar=knob.name.split("_")[-1].upper(), help=text)
        else:
            group.add_argument(flag, type=parts[0] if parts else kind, help=text)
