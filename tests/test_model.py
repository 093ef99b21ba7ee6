import numpy as np
import pytest

from imgsim.model import (
    Trainer,
    build_autoencoder,
    compile_encoder,
    covariance_term,
    decoder_of,
    encoder_of,
    load_autoencoder,
    variance_term,
)


@pytest.fixture(scope="module")
def autoencoder():
    return build_autoencoder(32, 16)


def test_encoder_and_decoder_are_named_submodels_and_the_latent_is_the_bottleneck(autoencoder):
    encoder, decoder = encoder_of(autoencoder), decoder_of(autoencoder)
    assert encoder.name == "encoder" and decoder.name == "decoder"
    assert encoder.output_shape == (None, 16)
    assert decoder.input_shape == (None, 16)
    assert autoencoder.output_shape == (None, 32, 32, 3)
    images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    out = autoencoder.predict(images, verbose=0)
    assert out.min() >= 0 and out.max() <= 1  # sigmoid pixels


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
    trainer = Trainer(build_autoencoder(32, 8), seed=0)
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

    from imgsim.model import build_encoder, compile_encoder

    calls = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    compile_encoder(build_encoder(32, 16))(np.zeros((1, 32, 32, 3), np.float32))
    assert calls == []
