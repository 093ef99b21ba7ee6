"""`imgsim` and `python -m imgsim`: parse the arguments, call the core, print. Bad input exits 2 with one line.

parser.py holds the arguments, commands.py and labels.py what each command does.
"""

from __future__ import annotations

import os
import sys

from imgsim.cli.commands import (
    cmd_api,
    cmd_clusters,
    cmd_demo,
    cmd_duplicates,
    cmd_eval,
    cmd_index,
    cmd_prune,
    cmd_query,
    cmd_serve,
    cmd_status,
    cmd_train,
    cmd_versions,
    join_ray,
)
from imgsim.cli.labels import cmd_labels
from imgsim.cli.parser import build_parser
from imgsim.core.config import Settings
from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line
from imgsim.storage import store
from imgsim.storage.engines import check_name

COMMANDS = {"serve": cmd_serve, "api": cmd_api, "demo": cmd_demo, "train": cmd_train, "index": cmd_index, "query": cmd_query,
            "clusters": cmd_clusters, "labels": cmd_labels, "duplicates": cmd_duplicates, "eval": cmd_eval, "status": cmd_status, "versions": cmd_versions,
            "prune": cmd_prune}


# The commands that run the model (their Keras backend is imported up front, quietly), and those of them that need
# a version already (with none, they say so before Keras starts: in a second, not ten).
MODEL_COMMANDS = ("train", "index", "query", "duplicates", "eval")
NEED_A_VERSION = ("index", "query", "duplicates")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(model_dir=getattr(args, "model_dir", None))
        check_name(settings.engine)  # a bad IMGSIM_ENGINE: one line before anything runs
        if args.command in MODEL_COMMANDS and not getattr(args, "background", False):
            from imgsim.learning.backend import import_keras

            join_ray(getattr(args, "ray", None))  # a wrong --ray: its line in a second, not after Keras' start-up
            if args.command in NEED_A_VERSION and not store.list_versions(settings.model_dir):
                raise store.no_model(settings.model_dir)

            import_keras(quiet=True)  # TensorFlow's native start-up lines off the terminal; a bad KERAS_BACKEND: one line
        code = COMMANDS[args.command](args, settings) or 0
    except (ImgsimError, ValueError) as exc:
        why = getattr(exc, "detail", exc)  # a refused URL: the reason its visitors are not told, for the owner
        print(f"error: {one_line(why)}", file=sys.stderr)  # one line, whatever names the message holds
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`imgsim labels review | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
    except Exception as exc:  # never a traceback for a user; IMGSIM_DEBUG=1 shows it
        if os.environ.get("IMGSIM_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (set IMGSIM_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
    return code
