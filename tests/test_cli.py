"""End to end through the command line: train, query, index a new file, errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgsim.cli import main

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
                 "--image-size", "32", "--latent-dim", "16", "--clusters", "3", "--batch-size", "8"])
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
        assert set(line["results"][0]) == {"path", "score", "distance", "cluster"}


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
    assert rows[0] == "path,cluster" and len(rows) > 20


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
    proc = subprocess.run([sys.executable, "-m", "imgsim", "query", "x.jpg", "--model-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


def test_eval_prints_the_model_next_to_the_baselines(capsys, trained, tiny_collection):
    _, models = trained
    code, out, _ = run(capsys, "eval", "--images", tiny_collection, "--model-dir", models, "-k", "3")
    assert code == 0
    for row in ("imgsim latents", "raw pixels 32px", "PCA-64 of pixels", "colour histogram"):
        assert row in out
    assert "precision@3" in out and "adjusted Rand index" in out
