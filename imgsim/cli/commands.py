"""The commands of `imgsim` besides labelling: each parses nothing, calls the core and prints."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager

from imgsim.core.config import TRAINING_FIELDS, Settings
from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line, write_csv


@contextmanager
def terminal_progress(description: str):
    """A tqdm bar fed by the core's `progress(fraction, message)` calls."""
    from tqdm import tqdm

    with tqdm(total=1000, desc=description, unit="‰", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
              file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.update(max(0, round(fraction * 1000) - bar.n))
            bar.set_postfix_str(str(message), refresh=True)

        yield progress


def cmd_demo(args, settings: Settings) -> None:
    from imgsim.inputs.demo import build_demo

    out = args.out or settings.images
    with terminal_progress("demo") as progress:
        path = build_demo(out, n=args.count, seed=args.seed, progress=progress)
    print(f"demo collection ready: {one_line(path)}")


def join_ray(address: str | None) -> None:
    """Join the Ray cluster before any progress bar: a missing package or a wrong address is the only line."""
    if address:
        from imgsim.runs.distributed import connect

        connect(address)


def cmd_train(args, settings: Settings) -> None:
    settings = settings.replace(images=args.images, follow_links=args.follow_links, engine=args.engine,
                                recheck=args.recheck, **{name: getattr(args, name) for name in TRAINING_FIELDS})
    if args.background and args.ray:
        raise ImgsimError("--ray runs in the foreground only (the background job does not take it)")
    if args.background:
        from imgsim.runs import jobs

        pid = jobs.start_training(settings, build_demo_first=args.demo_first)
        print(f"training in the background (pid {pid}); `imgsim status --follow` shows its progress, "
              f"its log is {one_line(jobs.log_path(settings.model_dir))}")
        return
    from imgsim.runs.training import train

    join_ray(args.ray)
    with terminal_progress("train") as progress:
        report = train(settings, progress, ray=args.ray)
    print(report.summary())


def cmd_index(args, settings: Settings) -> None:
    from imgsim.runs.indexing import index
    from imgsim.storage import store

    images = args.images or store.images_root(settings.model_dir)
    join_ray(args.ray)
    with terminal_progress("index") as progress:
        report = index(settings.replace(images=images, follow_links=args.follow_links, recheck=args.recheck), progress,
                       engine=args.engine, ray=args.ray)
    print(report.summary())


def cmd_query(args, settings: Settings) -> int:
    """Each source is answered on its own: one bad source prints its error line, the rest still run."""
    from imgsim.inputs.images import describe, open_image, read_bytes
    from imgsim.search import Searcher
    from imgsim.search.plot import grid_path, save_grid

    if args.n < 1:
        raise ImgsimError("-n must be at least 1")
    searcher = Searcher.load(settings.model_dir, engine=args.engine)
    failed = 0
    for number, source in enumerate(args.sources, 1):
        try:
            data = read_bytes(source)
            result = searcher.query(source, args.n, args.scope, data=data, recheck=args.recheck and settings.recheck)
        except ImgsimError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(result.to_dict()))  # ASCII: names escaped, and kept exactly
        else:  # one name, one line: a name holding a newline cannot forge a result line
            print(f"{one_line(source)}  (group {result.cluster})")
            for rank, hit in enumerate(result.results, 1):
                copy = "  (exact copy)" if hit.exact else ""
                scene = f"  (same scene: {hit.inliers} keypoints agree)" if hit.same_scene else ""
                print(f"  {rank:2d}. {hit.score:.4f}  group {hit.cluster}  {one_line(hit.path)}{copy}{scene}")
        if args.plot:
            plot = grid_path(args.plot, number, len(args.sources))
            save_grid(plot, open_image(data, describe(source), draft_size=160), result)
            print(f"grid written to {one_line(plot)}", file=sys.stderr)
    return 2 if failed else 0


def cmd_clusters(args, settings: Settings) -> None:
    from collections import Counter

    from imgsim.learning.groups import silhouette_by_k
    from imgsim.storage import store
    from imgsim.storage.group_names import load_labels, set_name

    version = store.load_version(settings.model_dir)
    for spec in args.name:
        group, sep, name = spec.partition("=")
        if not sep or not group.strip().isdigit() or not 0 <= int(group) < len(version.centres):
            raise ImgsimError(f"--name {spec}: expected G=NAME with G a group from 0 to {len(version.centres) - 1}")
        set_name(settings.model_dir, version.id, int(group), name)
    labels = load_labels(settings.model_dir, version.id)
    counts = Counter(version.groups.tolist())
    print(f"version {one_line(version.id)}: {len(version)} images in {len(version.centres)} groups")
    for group in range(len(version.centres)):
        label = labels.get(group)
        named = f"  {one_line(label.name)}" + (" (carried over, unconfirmed)" if label.carried else "") if label else ""
        print(f"  group {group}: {counts.get(group, 0)} images{named}")
    if args.silhouette:
        for k, score in silhouette_by_k(version.vectors).items():
            print(f"  k={k:2d}  silhouette {score:.3f}")
    if args.export:
        names = {g: label.name for g, label in labels.items()}
        write_csv(args.export, ["path", "group", "name"],
                  ((p, g, names.get(g, "")) for p, g in zip(version.paths, version.groups.tolist())))
        print(f"wrote {one_line(args.export)}")


def duplicate_groups(version, threshold: float, rescan: bool) -> list:
    """The groups from the version's last finished scan (said on stderr, with its age), or from a scan made now and kept
    (kept only where the model folder can be written; a threshold below the kept scan's floor scans in memory)."""
    from imgsim.duplicates import load_scan, scan_and_save, scan_duplicates
    from imgsim.duplicates.results import version_floor

    scan = None if rescan else load_scan(version)
    if scan is not None and threshold >= scan.floor:
        print(f"copies as found by the scan of {scan.age() / 60:.0f} minute(s) ago ({scan.stats.summary()}); "
              "--rescan to scan again", file=sys.stderr)
        return scan.groups(threshold)
    try:
        if threshold < version_floor(version):
            raise PermissionError("below the floor of the scan that is kept")
        scan = scan_and_save(version)
    except (ImgsimError, OSError):  # busy, read-only, or a threshold the kept scan does not serve: not kept
        scan = scan_duplicates(version, threshold)
    print(f"scanned now: {scan.stats.summary()}", file=sys.stderr)
    return scan.groups(threshold)


def cmd_duplicates(args, settings: Settings) -> None:
    from imgsim.duplicates import DEFAULT_THRESHOLD, duplicates_csv
    from imgsim.storage import store

    version = store.load_version(settings.model_dir)
    threshold = args.threshold
    if threshold is None:
        threshold = version.manifest.get("metrics", {}).get("duplicate_threshold") or DEFAULT_THRESHOLD
    if not -1.0 <= threshold <= 1.0:
        raise ImgsimError(f"--threshold must be a cosine similarity between -1 and 1, got {threshold}")
    groups = duplicate_groups(version, threshold, args.rescan)
    for group in groups:
        if args.json:
            print(json.dumps(group.to_dict()))  # ASCII: names escaped, and kept exactly
            continue
        print(f"group {group.group}: {len(group.images)} {'exact copies' if group.exact else 'near copies'}")
        for m in group.images:
            size = f"{m.width}x{m.height}" if m.width else "?x?"
            print(f"  {'keep' if m.keep else '    '}  {m.score:.4f}  {m.match:16}  {size:>11}  {m.bytes:>10,} B  "
                  f"{one_line(m.path)}")  # match: why it is a copy (imgsim.duplicates.MATCHES)
    if not args.json:
        spare = sum(len(g.images) - 1 for g in groups)
        print(f"{len(groups)} group(s), {spare} image(s) another one could replace (threshold {threshold:.3f}); "
              "nothing was changed", file=sys.stderr)
    if args.export:
        args.export.write_text(duplicates_csv(groups), encoding="utf-8")
        print(f"wrote {one_line(args.export)}", file=sys.stderr)


def cmd_eval(args, settings: Settings) -> None:
    from imgsim.runs.evaluation import run_evaluation

    print(run_evaluation(args.images, settings.model_dir, k=args.k))


def status_line(status) -> str:
    """One line on a background training run, as `imgsim status` and `imgsim serve` print it."""
    import time

    if status is None:
        return "no training run has been started here"
    state = status.get("state")
    if state == "running":
        elapsed = time.time() - status.get("started", time.time())
        return f"training: {status.get('fraction', 0):.0%} · {one_line(status.get('message', ''))} · {elapsed:.0f} s elapsed"
    if state == "finished":
        return f"training finished: {one_line(status.get('message', ''))}"
    return f"training {'stopped' if status.get('stopped') else 'failed'}: {one_line(status.get('error', ''))}"


def follow_status(model_dir, follow: bool, every: float, stop=lambda: False) -> dict | None:
    """Print the run's line, and with `follow` a new line whenever it changes until the run (or `stop()`) ends."""
    import time

    from imgsim.runs import jobs

    status, last = jobs.training_status(model_dir), None
    while True:
        text = status_line(status)
        if text != last:
            print(text, flush=True)
            last = text
        if not follow or not status or status.get("state") != "running" or stop():
            return status
        time.sleep(max(0.5, every))
        status = jobs.training_status(model_dir)


def cmd_status(args, settings: Settings) -> int:
    """One line for the last background run; with --follow, a line every few seconds until it ends."""
    status = follow_status(settings.model_dir, args.follow, args.every)
    return 0 if not status or status.get("state") != "failed" else 2


def cmd_serve(args, settings: Settings) -> int:
    """The dashboard, with a first model training in the background when there is none; its progress prints here."""
    from imgsim import serve
    from imgsim.core.errors import BusyError
    from imgsim.runs import jobs
    from imgsim.storage import store

    images_given = args.images is not None or bool(os.environ.get("IMGSIM_IMAGES"))
    settings = settings.replace(images=args.images)
    environ = {**os.environ, "IMGSIM_MODEL_DIR": str(settings.model_dir), "IMGSIM_IMAGES": str(settings.images)}
    serve.check_address(args.host, args.port)  # before anything starts: a bad address is one line, nothing else
    warning = serve.exposure_warning(args.host)
    if warning:
        print(f"imgsim: {warning}", file=sys.stderr)
    if store.current_id(settings.model_dir) is None:
        try:  # the demo build is a no-op once complete
            jobs.start_training(settings, build_demo_first=not images_given)
        except BusyError:
            pass  # a run already in progress: follow it
    extra = [arg for arg in args.streamlit_args if arg != "--"]
    server = serve.launch(args.host, args.port, ["--server.headless=true", *extra], environ=environ)
    # Stopped (kill, a service manager): the server goes too, never left running on its own.
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        if jobs.is_running(settings.model_dir):
            follow_status(settings.model_dir, True, 10, stop=lambda: server.poll() is not None)
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the server too (same process group); let it finish its own way
        try:
            return server.wait(timeout=15)
        except (KeyboardInterrupt, Exception):
            server.kill()
            return 130


def cmd_api(args, settings: Settings) -> int:
    """The HTTP API (imgsim.api); a bad address or a missing extra is one line before anything starts."""
    from imgsim import serve
    from imgsim.api import serving

    serving.check_installed()
    serve.check_address(args.host, args.port)
    return serving.run(args.host, args.port, settings.model_dir, args.workers)


def cmd_versions(args, settings: Settings) -> None:
    from imgsim.storage import store

    if args.use:
        store.set_current(settings.model_dir, args.use)
    rows = store.version_table(settings.model_dir)
    if not rows:
        print(f"no model versions in {one_line(settings.model_dir)}")
    for row in rows:  # a manifest may have been edited by hand: its fields are shown escaped
        twin = row["twin recall@1"]
        print(one_line(f"{'*' if row['active'] else ' '} {row['id']}  {row['kind']}  {row['images'] or '?'} images  "
                       f"{row['groups'] or '?'} groups  engine {row['engine'] or '?'}  "
                       f"twin recall@1 {f'{twin:.3f}' if isinstance(twin, (int, float)) else '-'}"))


def cmd_prune(args, settings: Settings) -> None:
    from imgsim.storage.prune import prune

    report = prune(settings.model_dir, keep=args.keep, dry_run=args.dry_run)

    def mb(n: int) -> str:
        return f"{n / 1e6:,.1f} MB"

    what = (f"{len(report.removed)} version(s) ({', '.join(report.removed) or 'none'}) and {report.files} file(s) "
            "no kept version uses")
    if args.dry_run:
        print(f"would remove {what}; kept: {', '.join(report.kept) or 'none'} ({mb(report.before)} in "
              f"{one_line(settings.model_dir)} now)")
    else:
        print(f"removed {what}; kept: {', '.join(report.kept) or 'none'}; {one_line(settings.model_dir)}: "
              f"{mb(report.before)} -> {mb(report.after)}")
