from pathlib import Path

import pytest

import imgsim
from imgsim import Settings


def test_environment_then_overrides(tmp_path):
    env = {"IMGSIM_MODEL_DIR": str(tmp_path / "m"), "IMGSIM_IMAGES": str(tmp_path / "i")}
    s = Settings.from_env(env)
    assert s.model_dir == tmp_path / "m" and s.images == tmp_path / "i"
    s = Settings.from_env(env, model_dir=tmp_path / "other", epochs=None)
    assert s.model_dir == tmp_path / "other" and s.epochs == Settings().epochs


@pytest.mark.parametrize("field,value", [("image_size", 100), ("image_size", 8), ("epochs", 0), ("clusters", 0),
                                         ("latent_dim", 1), ("validation_split", 0.7)])
def test_bad_settings_are_refused_with_a_message(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        Settings(**{field: value})


def test_defaults_match_the_design():
    s = Settings()
    assert (s.image_size, s.clusters) == (128, 4)


def test_data_lives_in_imgsim_home_else_the_users_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSIM_HOME", str(tmp_path / "home"))
    s = Settings()
    assert (s.model_dir, s.images) == (tmp_path / "home" / "models", tmp_path / "home" / "demo")
    monkeypatch.delenv("IMGSIM_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # platformdirs' per-user folder on Linux
    s = Settings()
    assert (s.model_dir, s.images) == (tmp_path / "xdg" / "imgsim" / "models", tmp_path / "xdg" / "imgsim" / "demo")
    package_parent = Path(imgsim.__file__).resolve().parent.parent  # site-packages when installed
    assert package_parent not in s.model_dir.parents
