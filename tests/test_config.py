from pathlib import Path

import pytest

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
    assert s.model_dir == Path(__file__).resolve().parent.parent / "models"
