import numpy as np
import pytest

from imgsim.core.config import Settings
from imgsim.learning.model import (
    Trainer,
    build_autoencoder,
    compile_encoder,
    covariance_term,
    decoder_of,
    encoder_of,
    load_autoencoder,
    mirror_invariance,
    variance_term,
)
from tests.helpers import TINY_ARCHITECTURE

# The models here are the tiny architecture unless a test is about the default one: what they check holds for any
# stage count, and a tiny model builds, traces and steps in a fraction of the time.
SMALL = Settings(**TINY_ARCHITECTURE)


@pytest.fixture(scope="module")
def autoencoder():
    return build_autoencoder(32, 16, SMALL)


def test_encoder_and_decoder_are_named_submodels_and_the_latent_is_the_bottleneck(autoencoder):
    encoder, decoder = encoder_of(autoencoder), decoder_of(autoencoder)
    assert encoder.name == "encoder" and decoder.name == "decoder"
    assert encoder.output_shape == (None, 16)
    assert decoder.input_shape == (None, 16)
    assert autoencoder.output_shape == (None, 32, 32, 3)
    images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    out = autoencoder.predict(images, verbose=0)
    assert out.min() >= 0 and out.max() <= 1  # sigmoid pixels


def test_the_searched_vector_weighs_an_image_and_its_mirror_image_by_the_models_own_invariance(tmp_path):
    """compile_encoder forms what is searched from the MirrorInvariance the model file carries: at 1 an image and
    its mirror image are one vector; at 0.6 their summed half is one and the other half is the difference, negated
    and shrunk by 0.4; at 0 the latent alone. A model saved before the layer existed is searched by its latent."""
    import keras


    images = np.random.default_rng(7).random((3, 32, 32, 3), np.float32)
    mirrored = images[:, :, ::-1].copy()
    model = {v: build_autoencoder(32, 16, SMALL.replace(mirror_invariance=v)) for v in (0, 0.6, 1)}
    for v, built in model.items():
        built.save(tmp_path / f"{v}.keras")
        assert mirror_invariance(encoder_of(load_autoencoder(tmp_path / f"{v}.keras"))) == v
    whole = compile_encoder(encoder_of(model[1]))
    np.testing.assert_allclose(whole(images), whole(mirrored), atol=1e-5)
    assert whole(images).shape == (3, 16)
    part = compile_encoder(encoder_of(model[0.6]))
    both, flipped = part(images), part(mirrored)
    assert both.shape == (3, 32)
    np.testing.assert_allclose(both[:, :16], flipped[:, :16], atol=1e-5)
    np.testing.assert_allclose(both[:, 16:], -flipped[:, 16:], atol=1e-5)
    latent = encoder_of(model[0.6])(images, training=False)
    mirror_latent = encoder_of(model[0.6])(mirrored, training=False)
    np.testing.assert_allclose(both[:, 16:], 0.4 * (np.asarray(latent) - np.asarray(mirror_latent)), atol=1e-5)
    plain = compile_encoder(encoder_of(model[0]))
    np.testing.assert_allclose(plain(images), np.asarray(encoder_of(model[0])(images, training=False)), atol=1e-5)
    assert not np.allclose(plain(images), plain(mirrored), atol=1e-3)  # the network itself tells them apart
    inp = keras.Input((32, 32, 3))
    before = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(inp)), name="encoder")  # no such layer
    assert mirror_invariance(before) == 0 and compile_encoder(before)(images).shape == (3, 5)


def test_saved_model_round_trips_in_keras_format(tmp_path, autoencoder):
    images = np.random.default_rng(1).random((3, 32, 32, 3), np.float32)
    path = tmp_path / "model.keras"
    autoencoder.save(path)
    loaded = load_autoencoder(path)
    before = compile_encoder(encoder_of(autoencoder))(images)
    after = compile_encoder(encoder_of(loaded))(images)
    np.testing.assert_allclose(before, after, atol=1e-5)


def test_the_stages_see_an_images_pattern_whatever_its_light(autoencoder):
    """Each image is standardised before the first stage: a darker, flatter copy reaches the stages unchanged,
    and only its mean colour (a bottleneck input of its own) tells the two apart."""
    import keras

    encoder = encoder_of(autoencoder)
    stages = keras.Model(encoder.input, encoder.get_layer("stage1_conv").input)
    numpy = keras.ops.convert_to_numpy
    image = 0.2 + 0.5 * np.random.default_rng(3).random((1, 32, 32, 3), np.float32)
    darker = 0.6 * image + 0.05
    np.testing.assert_allclose(numpy(stages(darker)), numpy(stages(image)), atol=0.03)  # 0.46 apart before it
    assert not np.allclose(numpy(stages(image[:, ::-1].copy())), numpy(stages(image)), atol=0.1)  # a pattern still shows
    latents = compile_encoder(encoder)(np.concatenate([image, darker]))
    assert not np.allclose(latents[0], latents[1], atol=1e-4)  # the mean colour still reaches the latent


def test_vicreg_terms_penalise_collapse_and_correlation():
    rng = np.random.default_rng(0)
    collapsed = np.asarray(np.ones((16, 4), np.float32))
    spread = np.asarray(rng.normal(scale=2.0, size=(256, 4)).astype(np.float32))
    assert float(variance_term(collapsed)) > 0.9
    assert float(variance_term(spread)) < 0.05
    x = rng.normal(size=(256, 1)).astype(np.float32)
    correlated = np.asarray(np.concatenate([x, x], axis=1))
    assert float(covariance_term(correlated)) > 10 * float(covariance_term(spread[:, :2]))


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    import keras

    keras.utils.set_random_seed(0)
    trainer = Trainer(build_autoencoder(32, 8, SMALL), seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    images = (np.random.default_rng(2).random((16, 32, 32, 3)) * 255).astype(np.uint8)  # as the cache holds them
    history = trainer.fit(images, batch_size=16, epochs=15, verbose=0).history
    assert history["reconstruction"][-1] < history["reconstruction"][0]
    assert {"loss", "reconstruction", "invariance", "spread"} <= set(history)


def test_tracing_the_encoder_parses_no_python_source(monkeypatch):
    """The dashboard's preload thread traces it beside Streamlit's script thread, whose ast.parse it raced
    (CPython 3.11: "AST constructor recursion depth mismatch"); autograph parsed 11 sources here."""
    import ast

    import numpy as np

    from imgsim.learning.model import build_encoder, compile_encoder

    calls = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    compile_encoder(build_encoder(32, 16, SMALL))(np.zeros((1, 32, 32, 3), np.float32))
    assert calls == []


OTHER_BACKEND = {"tensorflow": "jax", "jax": "tensorflow", "torch": "tensorflow"}
LOAD_AND_ENCODE = """
import sys
import numpy as np
from imgsim.learning.model import compile_encoder, encoder_of, keras, load_autoencoder
jax_loaded = "jax" in sys.modules
images = np.load(sys.argv[2])
model = load_autoencoder(sys.argv[1])
np.save(sys.argv[3], compile_encoder(encoder_of(model))(images))
keras.utils.set_random_seed(0)  # as a fit does; then a save, which looks for TensorFlow's types
model.save(sys.argv[3] + ".keras")
tensorflow_loaded = "tensorflow" in sys.modules
import jax  # whatever was blocked while the backend loaded, imports now
print(jax_loaded, callable(jax.jit), tensorflow_loaded)
print(keras.backend.backend())
"""


def run_under(backend: str, *args, code: str = LOAD_AND_ENCODE, env: dict | None = None):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, **(env or {}), "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_model_saved_under_one_backend_answers_the_same_under_another(tmp_path, autoencoder):
    """The .keras file holds configuration and weights only: TensorFlow <-> JAX give the same latents."""
    import importlib.util

    import keras

    other = OTHER_BACKEND[keras.backend.backend()]
    if importlib.util.find_spec(other) is None:
        pytest.skip(f"{other} is not installed")
    images = np.random.default_rng(5).random((4, 32, 32, 3), np.float32)
    path = tmp_path / "model.keras"
    autoencoder.save(path)
    np.save(tmp_path / "images.npy", images)
    home = tmp_path / "home"  # a data folder of this process's own: what JAX keeps there is its alone
    done = run_under(other, path, tmp_path / "images.npy", tmp_path / "latents.npy", env={"IMGSIM_HOME": str(home)})
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == other, done.stderr[-2000:]
    jax_loaded, jax_after, tensorflow_loaded = done.stdout.strip().splitlines()[-2].split()
    assert jax_after == "True" and jax_loaded == str(other == "jax")  # TensorFlow started without JAX (1.1-1.5 CPU s)
    assert tensorflow_loaded == str(other == "tensorflow")  # and JAX's Keras seeds and saves without TensorFlow (13.5 s)
    here = compile_encoder(encoder_of(autoencoder))(images)
    np.testing.assert_allclose(np.load(tmp_path / "latents.npy"), here, atol=1e-4)
    assert not np.allclose(here[0], here[1], atol=1e-3)  # latents that tell images apart, not a constant
    if other == "jax":  # its compiled programs kept for the next process (backend.use_compilation_cache)
        kept = [f.name for f in (home / "cache" / "jax").iterdir()]
        assert any(name.startswith("jit__uniform") for name in kept), kept[:20]  # the initialisers' too


def test_jax_keeps_its_programs_in_imgsim_s_cache_unless_its_own_variables_say_otherwise(monkeypatch, tmp_path):
    jax = pytest.importorskip("jax")
    from imgsim.learning import backend

    saved = {option: getattr(jax.config, option) for option in backend.JAX_CACHE}
    try:
        monkeypatch.setenv("IMGSIM_HOME", str(tmp_path))
        for variable in backend.JAX_CACHE.values():
            monkeypatch.setenv(variable, "")  # recorded, so undone after (delenv of an unset variable is not)
            monkeypatch.delenv(variable)
        backend.use_compilation_cache()
        assert (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
                jax.config.jax_compilation_cache_max_size) == (str(tmp_path / "cache" / "jax"), 0.0, 2**30)
        # a person's own setting, which JAX read from its variable at import
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        backend.use_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        # a data folder whose name is not UTF-8 (as Python reads it: a surrogate): no cache rather than a model
        # that fails to load
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("IMGSIM_HOME", str(tmp_path / "caf\udce9"))
        backend.use_compilation_cache()
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        for option, value in saved.items():
            jax.config.update(option, value)


def test_mixed_precision_trains_with_float32_loss_and_statistics_on_the_cpu():
    """mixed_float16 (what a GPU gets): float16 convolutions, but the loss, VICReg's terms, the standardisation
    and the latent stay float32, and the step's loss is finite."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = build_autoencoder(32, 8, SMALL)
        encoder = encoder_of(model)
        assert encoder.get_layer("stage1_conv").compute_dtype == "float16"
        assert {encoder.get_layer(n).compute_dtype for n in ("standardise", "mean_colour", "latent")} == {"float32"}
        trainer = Trainer(model, seed=0)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        images = (np.random.default_rng(2).random((16, 32, 32, 3)) * 255).astype(np.uint8)
        history = trainer.fit(images, batch_size=8, epochs=1, verbose=0).history
        assert all(np.isfinite(history[k]).all() for k in ("loss", "reconstruction", "invariance", "spread"))
        latents = compile_encoder(encoder)(images[:4].astype(np.float32) / 255)
        assert latents.dtype == np.float32 and np.isfinite(latents).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # float16 latents of a few hundred: their covariance (~9e4) overflows float16 (65,504); float32 holds it
    big = np.random.default_rng(0).normal(scale=300.0, size=(64, 4)).astype(np.float16)
    expected = float(covariance_term(big.astype(np.float32)))
    assert np.isfinite(expected) and float(covariance_term(big)) == pytest.approx(expected, rel=1e-5)
    assert float(variance_term(big)) == pytest.approx(float(variance_term(big.astype(np.float32))), abs=1e-6)


def test_a_bad_or_missing_keras_backend_is_one_line_without_a_traceback(tmp_path):
    import importlib.util
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    def imgsim(backend):  # train: a command that needs no version (query would first say there is none)
        env = {**os.environ, "KERAS_BACKEND": backend}
        return subprocess.run([sys.executable, "-m", "imgsim", "train", "--model-dir", str(tmp_path / "models"),
                               "--images", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = imgsim("nonsense")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: KERAS_BACKEND='nonsense' is not a backend imgsim runs on; use one of tensorflow, jax, torch"]
    missing = next((b for b in ("torch", "jax", "tensorflow") if importlib.util.find_spec(b) is None), None)
    if missing:
        done = imgsim(missing)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"KERAS_BACKEND={missing} but {missing} is not installed" in done.stderr


def test_without_keras_backend_the_first_installed_is_chosen(monkeypatch):
    from imgsim.learning import backend

    monkeypatch.delitem(__import__("sys").modules, "keras")  # as in a fresh process: nothing imported yet
    # unset as choose() reads it; setenv, not delenv(raising=False), so that what choose() writes is undone after
    # (a delenv of a variable not set records nothing: "jax" stayed, and this worker's later children trained under JAX)
    monkeypatch.setenv("KERAS_BACKEND", "")
    monkeypatch.setattr(backend, "installed", lambda name: name in {"jax", "torch"})
    assert backend.choose() == "jax" and __import__("os").environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setattr(backend, "installed", lambda name: False)
    monkeypatch.delenv("KERAS_BACKEND")
    with pytest.raises(backend.ImgsimError, match="no Keras backend is installed"):
        backend.choose()


def test_under_tensorflow_the_cpu_allocator_pools_memory_unless_a_person_said_otherwise(monkeypatch):
    """TF_CPU_ALLOCATOR_USE_BFC: set before TensorFlow starts (a whole default fit 1.22x faster here); a
    person's own value wins, and no other backend gets it."""
    from imgsim.learning import backend

    monkeypatch.delitem(__import__("sys").modules, "keras")  # as in a fresh process: nothing imported yet
    environ = __import__("os").environ
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "")  # undone after the test, whatever choose() writes
    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(backend, "installed", lambda name: True)
    assert backend.choose() == "jax" and "TF_CPU_ALLOCATOR_USE_BFC" not in environ
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert backend.choose() == "tensorflow" and environ["TF_CPU_ALLOCATOR_USE_BFC"] == "1"
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "0")
    assert backend.choose() == "tensorflow" and environ["TF_CPU_ALLOCATOR_USE_BFC"] == "0"


def test_grid_pooling_is_average_pooling_on_a_multiple_and_keeps_its_grid_on_any_side():
    import keras

    from imgsim.learning.model import GridPooling

    numpy = keras.ops.convert_to_numpy
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(numpy(GridPooling(4)(x)), numpy(keras.layers.AveragePooling2D(2)(x)), atol=1e-6)
    for side in (2, 3, 5, 12):  # smaller than the grid, or no multiple of it: still 4 x 4, each cell a mean
        y = numpy(GridPooling(4)(np.ones((1, side, side, 2), np.float32)))
        assert y.shape == (1, 4, 4, 2)
        np.testing.assert_allclose(y, 1.0, atol=1e-6)


def test_gem_pooling_lies_between_the_average_and_the_maximum_and_saves_its_power(tmp_path):
    import keras

    from imgsim.learning.model import GeMPooling

    x = np.random.default_rng(1).random((2, 6, 6, 4)).astype(np.float32)
    mean, top = x.mean(axis=(1, 2)), x.max(axis=(1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(GeMPooling(1.0)(x)), mean, atol=1e-5)
    gem = keras.ops.convert_to_numpy(GeMPooling(3.0)(x))
    assert np.all(gem > mean) and np.all(gem < top)
    model = build_autoencoder(32, 8, SMALL.replace(pooling="gem"))
    assert isinstance(encoder_of(model).get_layer("pool2"), GeMPooling)
    model.save(tmp_path / "gem.keras")
    images = np.random.default_rng(2).random((2, 32, 32, 3), np.float32)
    np.testing.assert_allclose(compile_encoder(encoder_of(load_autoencoder(tmp_path / "gem.keras")))(images),
                               compile_encoder(encoder_of(model))(images), atol=1e-5)


def test_multi_crop_and_a_teacher_train_the_encoder_and_the_teacher_follows_it_by_its_momentum():
    """Two views, four small crops at half the side, the teacher's latents as targets: the loss is finite, the
    student's weights move by gradients and the teacher's only by the moving average (m = 0.5 here)."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_autoencoder(32, 8, SMALL)
    trainer = Trainer(model, seed=0, local_crops=4, local_size=16, teacher_momentum=0.5)
    assert set(trainer.sized) == {"16", "32"} and trainer.teacher is not None
    student = encoder_of(model)
    before = [np.array(w) for w in student.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(trainer.teacher.get_weights(), before))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = (np.random.default_rng(2).random((8, 32, 32, 3)) * 255).astype(np.uint8)
    history = trainer.fit(images, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["invariance"][0] > 0
    kernel = [i for i, w in enumerate(student.weights) if w.name == "kernel"][0]
    after, teacher = student.get_weights()[kernel], trainer.teacher.get_weights()[kernel]
    assert not np.allclose(after, before[kernel])  # the student learned
    # one step: teacher = 0.5 * its start + 0.5 * the student's weights read in that step (before the update)
    np.testing.assert_allclose(teacher, before[kernel], atol=1e-6)  # student == start when read: unchanged
    trainer.fit(images, batch_size=8, epochs=1, verbose=0)
    teacher2 = trainer.teacher.get_weights()[kernel]
    np.testing.assert_allclose(teacher2, 0.5 * teacher + 0.5 * after, atol=1e-5)


def test_smaller_views_train_the_same_weights_as_the_models_own_size():
    import keras


    keras.utils.set_random_seed(0)
    model = build_autoencoder(32, 8, SMALL)
    trainer = Trainer(model, seed=0, sizes=(16,))
    trainer.view_size = 16
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = (np.random.default_rng(2).random((8, 32, 32, 3)) * 255).astype(np.uint8)
    before = [np.array(w) for w in encoder_of(model).get_weights()]
    history = trainer.fit(images, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert trainer.sized["16"].input_shape == (None, 16, 16, 3) and encoder_of(model).input_shape == (None, 32, 32, 3)
    assert any(not np.allclose(a, b) for a, b in zip(before, encoder_of(model).get_weights()))
