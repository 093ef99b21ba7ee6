"""End to end through the command line: train, query, index a new file, errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgsim.cli import main
from tests.helpers import TINY_FLAGS

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_collection):
    """A private collection copy and a model trained on it through the CLI (1 epoch, 32 px)."""
    base = tmp_path_factory.mktemp("cli")
    images = Path(shutil.copytree(tiny_collection, base / "images"))
    code = main(["train", "--images", str(images), "--model-dir", str(base / "models"), "--epochs", "1",
                 "--image-size", "32", "--latent-dim", "16", "--clusters", "3", "--batch-size", "8", *TINY_FLAGS])
    assert code == 0
    return images, base / "models"


def test_query_json_gives_n_results_per_source(capsys, trained):
    images, models = trained
    sources = sorted(images.rglob("*.jpg"))[:2]
    code, out, _ = run(capsys, "query", *sources, "--model-dir", models, "-n", "4", "--json", "--scope", "all")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["query"] for line in lines] == [str(s) for s in sources]
    for line, source in zip(lines, sources):
        assert isinstance(line["cluster"], int) and len(line["results"]) == 4
        assert str(source.resolve()) not in [r["path"] for r in line["results"]]
        assert all(Path(r["path"]).is_absolute() for r in line["results"])
        assert set(line["results"][0]) == {"path", "score", "distance", "cluster", "exact", "inliers", "same_scene"}
        assert line["results"][0]["inliers"] is None  # a 32 px model keeps no local features: nothing re-checked


def test_plot_writes_a_png_grid(capsys, trained, tmp_path):
    images, models = trained
    source = sorted(images.rglob("*.jpg"))[0]
    code, out, _ = run(capsys, "query", source, "--model-dir", models, "-n", "3", "--plot", tmp_path / "grid.png")
    assert code == 0 and "group" in out
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width >= 4 * 100


def test_index_adds_a_new_file_that_queries_then_find(capsys, trained):
    images, models = trained
    original = sorted(images.rglob("*.jpg"))[0]
    from PIL import Image, ImageOps

    new = images / "added" / "mirrored.jpg"
    new.parent.mkdir()
    ImageOps.mirror(Image.open(original)).save(new, quality=95)
    (images / "added" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, out, _ = run(capsys, "index", "--images", images, "--model-dir", models)
    assert code == 0 and "1 added" in out and "broken.jpg" in out
    code, out, _ = run(capsys, "query", new, "--model-dir", models, "-n", "30", "--json", "--scope", "all")
    found = [r["path"] for r in json.loads(out)["results"]]
    assert str(new.resolve()) not in found  # never itself
    code, out, _ = run(capsys, "query", original, "--model-dir", models, "-n", "30", "--json", "--scope", "all")
    assert str(new.resolve()) in [r["path"] for r in json.loads(out)["results"]]
    code, out, _ = run(capsys, "index", "--images", images, "--model-dir", models)
    assert code == 0 and "no changes" in out


def test_clusters_export_writes_every_image(capsys, trained, tmp_path):
    images, models = trained
    code, out, _ = run(capsys, "clusters", "--model-dir", models, "--export", tmp_path / "c.csv")
    assert code == 0 and "group 0" in out
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "path,group,name" and len(rows) > 20


def test_clusters_name_names_a_group_from_the_command_line(capsys, trained, tmp_path):
    import csv

    images, models = trained
    code, out, _ = run(capsys, "clusters", "--model-dir", models, "--name", "1==HYPERLINK(x)", "--name", "0=cats",
                       "--export", tmp_path / "c.csv")
    assert code == 0 and "group 0:" in out and "cats" in out and "=HYPERLINK(x)" in out
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert {r["name"] for r in rows if r["group"] == "0"} == {"cats"}
    assert {r["name"] for r in rows if r["group"] == "1"} == {"'=HYPERLINK(x)"}  # text, never a formula
    code, _, err = run(capsys, "clusters", "--model-dir", models, "--name", "99=x")
    assert code == 2 and err.startswith("error: --name 99=x") and len(err.strip().splitlines()) == 1
    run(capsys, "clusters", "--model-dir", models, "--name", "1=")  # an empty name removes it
    code, out, _ = run(capsys, "clusters", "--model-dir", models)
    assert "HYPERLINK" not in out and "cats" in out


def test_bad_input_exits_2_with_one_line(capsys, trained, tmp_path):
    images, models = trained
    bad = tmp_path / "fake.png"
    bad.write_text("<html>not an image</html>")
    code, out, err = run(capsys, "query", bad, "--model-dir", models)
    assert code == 2 and err.startswith("error: ") and "fake.png" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "query", bad, "--model-dir", tmp_path / "nothing-here")
    assert code == 2 and "no trained model" in err
    code, _, err = run(capsys, "train", "--images", tmp_path / "missing", "--model-dir", tmp_path / "m")
    assert code == 2 and "no such folder" in err
    code, _, err = run(capsys, "query", "http://127.0.0.1:9/x.jpg", "--model-dir", models)
    assert code == 2 and "error:" in err


def test_python_dash_m_entry_point_reports_errors_without_traceback(tmp_path):
    # no model yet: said before Keras starts (a backend that cannot load is not reached)
    proc = subprocess.run([sys.executable, "-m", "imgsim", "query", "x.jpg", "--model-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": "nonsense"})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no trained model in") and "Traceback" not in proc.stderr


def test_eval_prints_the_model_next_to_the_baselines(capsys, trained, tiny_collection):
    _, models = trained
    code, out, _ = run(capsys, "eval", "--images", tiny_collection, "--model-dir", models, "-k", "3")
    assert code == 0
    for row in ("imgsim latents", "raw pixels 32px", "PCA-64 of pixels", "colour histogram"):
        assert row in out
    assert "precision@3" in out and "adjusted Rand index" in out


# --- names are data, links and non-images: a collection a stranger arranged ------------------------

FORGED = "  1. 1.0000  group 0  forged.jpg"  # a file name holds no slash
HOSTILE_NAMES = [b"caf\xe9.jpg", ("evil\n" + FORGED).encode(), b"-rf.jpg", b"--help.jpg", b"no-suffix"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_collection, trained):
    """The tiny collection plus hostile names, links and non-images, indexed with a copy of the trained model."""
    from PIL import Image

    base = tmp_path_factory.mktemp("hostile")
    images = Path(shutil.copytree(tiny_collection, base / "images"))
    models = Path(shutil.copytree(trained[1], base / "models"))
    sample = Image.open(sorted(images.rglob("*.jpg"))[0])
    for turn, raw in enumerate(HOSTILE_NAMES, 1):  # each its own bytes: a copy would be found as the same image
        with open(os.path.join(os.fsencode(images), raw), "wb") as fh:
            sample.rotate(turn * 7).save(fh, "PNG" if raw == b"no-suffix" else "JPEG")
    (base / "outside").mkdir()
    sample.save(base / "outside" / "secret.jpg")
    os.symlink(base / "outside" / "secret.jpg", images / "secret.jpg")
    os.symlink("loop.jpg", images / "loop.jpg")
    os.symlink("nowhere.jpg", images / "gone.jpg")
    (images / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (images / "notes.txt").write_text("not an image")
    code = main(["index", "--images", str(images), "--model-dir", str(models)])
    return images, models, code


def photo(images: Path) -> Path:
    """One of the tiny collection's own photographs (in a sub-folder), to query with."""
    return sorted(p for p in images.rglob("*.jpg") if p.parent != images)[0]


def all_results(capsys, models, source, n=200):
    code, out, err = run(capsys, "query", source, "--model-dir", models, "-n", n, "--json", "--scope", "all")
    assert code == 0, err
    return [r["path"] for r in json.loads(out)["results"]]


def test_hostile_names_and_links_are_indexed_or_skipped_never_fatal(capsys, hostile):
    images, models, code = hostile
    assert code == 0
    code, out, err = run(capsys, "index", "--images", images, "--model-dir", models)
    assert code == 0 and out.count("\n") == 1  # the run's summary: one line
    assert out.startswith("no changes") and "skipped 4 file(s)" in out and "1 file(s) are not images" in out
    for name in ("drawing.svg", "gone.jpg", "loop.jpg", "secret.jpg"):
        assert name in out
    paths = all_results(capsys, models, photo(images))
    for raw in HOSTILE_NAMES:  # stored exactly: the JSON output gives back the name's own bytes
        assert os.path.join(str(images), os.fsdecode(raw)) in paths
    assert not [p for p in paths if "secret" in p or "loop" in p or "gone" in p or p.endswith((".svg", ".txt"))]


def test_a_name_cannot_forge_a_result_line(capsys, hostile):
    images, models, _ = hostile
    query = photo(images)
    total = len(all_results(capsys, models, query))
    code, out, _ = run(capsys, "query", query, "--model-dir", models, "-n", total, "--scope", "all")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + total
    assert all(re.fullmatch(r"  [ \d]\d\. -?\d\.\d{4}  group \d+  /.+", line) for line in lines[1:]), out
    assert FORGED not in lines and "evil\\n" + FORGED in out
    assert "caf\\xe9.jpg" in out  # an undecodable byte, shown escaped


def test_a_name_starting_with_dashes_is_a_source_after_double_dash(capsys, hostile, monkeypatch):
    images, models, _ = hostile
    monkeypatch.chdir(images)
    code, out, err = run(capsys, "query", "--model-dir", models, "--json", "-n", "2", "--", "-rf.jpg", "--help.jpg")
    assert code == 0, err
    assert [json.loads(line)["query"] for line in out.splitlines()] == ["-rf.jpg", "--help.jpg"]


@pytest.mark.parametrize("source", ["missing\nerror: forged second line.jpg", os.fsdecode(b"\xff\xfe-missing.jpg"),
                                    "\x1b[2Jcleared.jpg"])
def test_error_lines_stay_one_line_for_any_name(capsys, hostile, source, tmp_path):
    _, models, _ = hostile
    code, out, err = run(capsys, "query", source, "--model-dir", models)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "\x1b" not in err
    assert "no such file" in err
    code, _, err = run(capsys, "train", "--images", tmp_path / source, "--model-dir", tmp_path / "m")
    errors = [line for line in err.split("\n") if "error:" in line]  # after the progress bar, if any
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and "no such folder" in errors[0]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.keras"))  # nothing trained or left


def test_grid_message_and_export_are_escaped(capsys, hostile, tmp_path):
    import csv

    images, models, _ = hostile
    grid = tmp_path / "grid\nwritten to passwd.png"
    code, _, err = run(capsys, "query", images / "-rf.jpg", "--model-dir", models, "-n", "3", "--plot", grid)
    assert code == 0 and grid.exists()
    assert [line for line in err.splitlines() if line.startswith("grid written")] == [
        f"grid written to {tmp_path}/grid\\nwritten to passwd.png"]

    export = tmp_path / "clusters.csv"
    code, out, _ = run(capsys, "clusters", "--model-dir", models, "--export", export)
    assert code == 0
    rows = list(csv.reader(export.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["path", "group", "name"] and all(len(row) == 3 for row in rows)
    assert len(rows) == 1 + len(all_results(capsys, models, images / "-rf.jpg")) + 1
    assert f"{images}/evil\\n{FORGED}" in [row[0] for row in rows]


def test_a_background_run_gets_every_setting_as_json_and_dash_names_stay_values(tmp_path):
    from imgsim import Settings
    from imgsim.runs import jobs

    settings = Settings(model_dir=tmp_path / "-models", images=tmp_path / "--images-folder", follow_links=True,
                        engine="faiss", image_size=48, workers=1, min_steps=0)
    assert Settings.from_json(settings.to_json()) == settings
    assert jobs.build_parser().parse_args([f"--model-dir={settings.model_dir}"]).model_dir == tmp_path / "-models"


def test_every_training_knob_is_a_train_flag_and_reaches_the_run(capsys, monkeypatch, tmp_path):
    """Flags come from Settings' fields with help text: a knob added there is a flag with no other edit."""
    import dataclasses

    from imgsim.core.config import TRAINING_FIELDS, Settings
    from imgsim.core.errors import ImgsimError
    from imgsim.runs import training

    knobs = [f.name for f in dataclasses.fields(Settings) if "help" in f.metadata]
    assert knobs == list(TRAINING_FIELDS) and {"image_size", "epochs", "patience", "min_steps"} <= set(knobs)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert all(f"--{name.replace('_', '-')} " in help_text for name in knobs)

    def train(settings, progress, **options):
        seen.append(settings)
        raise ImgsimError("stopped by the test")

    seen = []
    monkeypatch.setattr(training, "train", train)
    code, _, err = run(capsys, "train", f"--model-dir={tmp_path}", "--validation-split", "0.2", "--patience", "5",
                       "--min-steps", "0", "--epochs", "3", "--engine", "exact")
    assert code == 2 and err.endswith("error: stopped by the test\n"), err  # after the progress bar
    assert seen == [Settings.from_env(model_dir=tmp_path).replace(validation_split=0.2, patience=5, min_steps=0,
                                                                   epochs=3, engine="exact")]


def test_train_in_the_background_and_follow_its_status(capsys, tiny_collection, tmp_path):
    models = tmp_path / "models"
    code, out, _ = run(capsys, "status", "--model-dir", models)
    assert code == 0 and out.strip() == "no training run has been started here"
    code, out, _ = run(capsys, "train", "--background", "--images", tiny_collection, "--model-dir", models,
                       "--epochs", "1", "--image-size", "32", "--latent-dim", "16", "--clusters", "3", "--batch-size", "8",
                       *TINY_FLAGS)
    assert code == 0 and out.startswith("training in the background (pid ")
    code, out, _ = run(capsys, "status", "--model-dir", models, "--follow", "--every", "0.5")
    lines = out.strip().splitlines()
    assert code == 0 and lines[-1].startswith("training finished: version ")
    assert all(line.startswith("training") for line in lines)
    code, out, _ = run(capsys, "versions", "--model-dir", models)
    assert out.startswith("* ")


def test_an_unknown_engine_in_the_environment_is_one_line_before_anything_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IMGSIM_ENGINE", "annoy")
    code = main(["versions", "--model-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown vector engine 'annoy'" in err
    assert not (tmp_path / "models").exists()
