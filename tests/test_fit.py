"""Fitting: the decoded cache, the step budget, batches from the cache, views, the label-free measure."""

import math

import keras
import numpy as np
import pytest
from PIL import Image

from imgsim import Settings
from imgsim.inputs.collection import Skipped, load_for_model
from imgsim.learning import fit
from imgsim.learning.fit import CachedBatches, budget, decode_cache, fit_autoencoder, split_holdout, twin_retrieval
from imgsim.learning.model import VIEWS, augment, loss_weights_of, views_of
from tests.helpers import TINY_ARCHITECTURE

numpy = keras.ops.convert_to_numpy
# The fits here train the tiny architecture (two stages; four by default): what they check is the fit around any model.
PLAIN = dict(VIEWS, area=(1.0, 1.0), aspect=(1.0, 1.0), degrees=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
             channel_gain=0.0, grey=0.0)  # views that change nothing


def test_budget_raises_small_collections_caps_large_ones_and_keeps_the_epoch_count():
    s = Settings(epochs=12, image_size=128)
    total, per_epoch = budget(200, s, 32)  # 12 passes of 7 steps = 84 steps: too few
    assert total == per_epoch * 12 and total >= fit.MIN_STEPS and per_epoch > 7
    total, per_epoch = budget(50_000, s, 32)  # 12 passes = 18,750 steps: capped
    assert total <= fit.MAX_STEPS + 12 and per_epoch * 12 == total
    assert budget(2_000, s, 32, min_steps=100, max_steps=1000) == (12 * 63, 63)  # in between: the epochs asked for


def test_budget_minimum_scales_with_pixels_and_can_be_switched_off():
    big = budget(24, Settings(epochs=1, image_size=128), 8)[0]
    small = budget(24, Settings(epochs=1, image_size=32), 8)[0]
    assert small == pytest.approx(big / 16, abs=1)  # a 32 px step costs about 1/16 of a 128 px one
    assert budget(24, Settings(epochs=2, image_size=128), 8, min_steps=0) == (2 * 3, 3)


def test_batches_cover_every_training_row_once_a_pass_and_never_a_held_out_one():
    cache = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(3, axis=3)
    held, rows = split_holdout(40, 0.1, seed=0)
    assert len(held) == 8 and not set(held) & set(rows) and len(rows) == 32  # at least min(32, n // 5) held out
    data = CachedBatches(cache, rows, batch_size=8, steps=4, seed=0)
    seen = [data[i][:, 0, 0, 0] for i in range(len(data))]
    assert all(batch.dtype == np.uint8 and len(batch) == 8 for batch in seen)
    assert sorted(np.concatenate(seen)) == sorted(rows)  # one pass: each training image once
    data.on_epoch_end()
    second = np.concatenate([data[i][:, 0, 0, 0] for i in range(len(data))])
    assert sorted(second) == sorted(rows) and not np.array_equal(np.concatenate(seen), second)  # reshuffled


def write_images(folder, count, size=40):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:02d}.png"
        Image.fromarray((rng.random((size, size + 7, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("memory_limit", [None, 1])
def test_cache_holds_each_image_once_losslessly_in_memory_or_mapped(tmp_path, monkeypatch, memory_limit):
    if memory_limit is not None:
        monkeypatch.setattr(fit, "CACHE_IN_MEMORY_BYTES", memory_limit)
    paths = write_images(tmp_path, 5)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(2, str(tmp_path / "bad.png"))
    skipped = Skipped()
    cache, kept = decode_cache(paths, 16, workers=2, skipped=skipped, folder=str(tmp_path))
    assert kept == [0, 1, 3, 4, 5] and list(skipped.reasons) == [str(tmp_path / "bad.png")]
    assert cache.dtype == np.uint8 and cache.shape == (5, 16, 16, 3)
    assert isinstance(cache, np.memmap) == (memory_limit is not None)
    for row, position in enumerate(kept):
        np.testing.assert_array_equal(cache[row] * np.float32(1 / 255), load_for_model(paths[position], 16)[0])


def test_views_that_change_nothing_return_the_image_and_a_seed_repeats_its_views():
    images = (np.random.default_rng(1).random((3, 24, 24, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(numpy(augment(images, 12, PLAIN)), images / 255, atol=1e-6)
    first, again = numpy(augment(images, 45)), numpy(augment(images, 45))
    other = numpy(augment(images, 46))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert first.min() >= 0 and first.max() <= 1


def test_a_quarter_crop_shows_half_the_width_magnified_and_grey_views_have_equal_channels():
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[None, None, :, None], (4, 64, 64, 3)).copy()
    views = numpy(augment(ramp, 3, dict(PLAIN, area=(0.25, 0.25))))  # 32 x 32 px crops
    spans = views[:, 32, :, 0].max(axis=1) - views[:, 32, :, 0].min(axis=1)
    np.testing.assert_allclose(spans, 0.5, atol=0.03)  # half the ramp, stretched over the whole width
    assert np.all(np.diff(views[:, 32, :, 0], axis=1) >= -1e-6)  # not mirrored
    grey = numpy(augment(np.random.default_rng(2).random((4, 16, 16, 3)).astype(np.float32), 1,
                         dict(PLAIN, grey=1.0)))
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-6)


def test_twin_retrieval_is_perfect_for_an_invariant_encoder_and_near_chance_for_noise():
    colours = np.random.default_rng(3).random((20, 1, 1, 3)).astype(np.float32)
    images = np.broadcast_to(colours, (20, 16, 16, 3)).copy()  # flat colours: any crop or turn leaves them alone
    views = dict(PLAIN, area=(0.3, 1.0), degrees=10.0)

    def mean_colour(x):
        return np.asarray(x).mean(axis=(1, 2))

    perfect = twin_retrieval(mean_colour, images, seed=0, views=views)
    assert perfect == {"twin_recall@1": 1.0, "twin_recall@10": 1.0, "twin_mrr": 1.0}
    noise = np.random.default_rng(4)
    random = twin_retrieval(lambda x: noise.normal(size=(len(x), 8)), images, seed=0, views=views)
    assert random["twin_recall@1"] < 0.3 and random["twin_mrr"] < 0.5 and random["twin_recall@10"] < 1.0


def test_early_stopping_watches_only_the_second_half_of_the_budget(tmp_path):
    """A measure that peaks in the first epoch (a noisy held-out set) neither ends the run nor chooses the weights."""
    import keras

    class Falling(keras.callbacks.Callback):  # runs after the real measure, before early stopping reads it
        def on_epoch_end(self, epoch, logs=None):
            logs["twin_mrr"] = (0.9, 0.5, 0.4, 0.3)[epoch]

    settings = Settings(image_size=32, latent_dim=8, **TINY_ARCHITECTURE, epochs=4, batch_size=8, seed=0, workers=1, patience=1)
    _, history = fit_autoencoder(write_images(tmp_path, 30), settings, Skipped(), lambda f, m: None, 0.85,
                                 min_steps=0, callbacks=[Falling()])
    assert len(history["loss"]) == 4  # watching from epoch 1, patience 1 had stopped after epoch 2
    assert history["best_epoch"] == 3  # the best watched epoch, not epoch 1


def test_fit_trains_the_budget_reports_the_measure_and_holds_images_out(tmp_path):
    paths = write_images(tmp_path, 30)
    settings = Settings(image_size=32, latent_dim=8, **TINY_ARCHITECTURE, epochs=2, batch_size=8, seed=0, workers=1,
                        patience=5)
    reports = []
    autoencoder, history = fit_autoencoder(paths, settings, Skipped(), lambda f, m: reports.append((f, m)), 0.85,
                                           min_steps=0)
    n_held = len(split_holdout(30, settings.validation_split, 0)[0])
    assert history["holdout_images"] == n_held and history["train_images"] == 30 - n_held
    per_epoch = math.ceil((30 - n_held) / 8)
    assert history["steps"] == 2 * per_epoch and history["images_seen"] == 2 * per_epoch * 8
    assert len(history["loss"]) == len(history["twin_mrr"]) == 2
    assert 0 <= history["best_twin_recall@1"] <= history["best_twin_recall@10"] <= 1
    assert history["best_epoch"] == 2 and history["best_twin_mrr"] == history["twin_mrr"][1]  # the second half's best
    assert reports[-1][0] == pytest.approx(0.85) and str(reports[-1][1]).startswith("epoch 2/2")
    # the numbers travel as data (imgsim.core.progress.Event): each batch's loss, each epoch's measures
    assert reports[-1][1].data["epoch"] == 2 and reports[-1][1].data["measures"]["twin_mrr"] == history["twin_mrr"][1]
    assert [m.data["epoch"] for _, m in reports if "measures" in getattr(m, "data", {})] == [1, 2]
    encoder = autoencoder.get_layer("encoder")
    assert encoder.output_shape == (None, 8)
    assert {"stage2_res1_conv", "stage2_conv"} <= {layer.name for layer in encoder.layers}
    assert "stage3_conv" not in {layer.name for layer in encoder.layers}


def test_the_views_and_loss_weights_come_from_settings():
    settings = Settings(view_grey=1.0, view_area=[0.5, 0.9], loss_covariance=0.5)
    assert views_of(settings) == dict(VIEWS, grey=1.0, area=(0.5, 0.9))
    assert loss_weights_of(settings)["covariance"] == 0.5 and views_of(Settings()) == VIEWS
    with pytest.raises(ValueError, match="stage_depth needs one entry per stage"):
        Settings(stage_filters=(8, 16))


def test_smaller_views_show_the_crop_at_their_own_size():
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[None, None, :, None], (4, 64, 64, 3)).copy()
    whole = numpy(augment(ramp, 3, PLAIN, size=32))
    assert whole.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(whole[:, 16, :, 0], ramp[:, 32, ::2, 0], atol=0.02)  # every other pixel of the whole
    quarter = numpy(augment(ramp, 3, dict(PLAIN, area=(0.25, 0.25)), size=16))
    spans = quarter[:, 8, :, 0].max(axis=1) - quarter[:, 8, :, 0].min(axis=1)
    np.testing.assert_allclose(spans, 0.5 * 15 / 16, atol=0.03)  # half the ramp on 16 px


def test_a_deadline_ends_the_epoch_once_its_time_has_come_and_its_least_steps_are_run():
    clock = [0.0]

    class Model:
        stop_training = False

    deadline = fit.Deadline(at=10.0, least=3, clock=lambda: clock[0])
    deadline.set_model(Model())
    deadline.on_train_batch_end(0)
    clock[0] = 11.0
    deadline.on_train_batch_end(1)
    assert not deadline.model.stop_training  # past the time, but only 2 of the 3 least steps
    deadline.on_train_batch_end(2)
    assert deadline.model.stop_training


@pytest.mark.parametrize("seconds, expected", [(1e-3, 2 * 2), (1e4, 2 * 5)])
def test_a_time_budget_trains_its_floor_when_time_is_short_and_its_cap_when_long(tmp_path, seconds, expected):
    """train_seconds: each epoch is a share of the time; min_steps is the floor and max_steps the cap (per run)."""
    settings = Settings(image_size=32, latent_dim=8, **TINY_ARCHITECTURE, epochs=2, batch_size=8, seed=0, workers=1, patience=5,
                        train_seconds=seconds, min_steps=4, max_steps=10)
    _, history = fit_autoencoder(write_images(tmp_path, 30), settings, Skipped(), lambda f, m: None, 0.85)
    assert history["steps"] == expected and len(history["loss"]) == 2


def test_early_epochs_train_smaller_views_and_early_stopping_waits_for_the_full_size(tmp_path):
    import keras

    sizes = []

    class Sizes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            sizes.append(self.model.view_size)
            logs["twin_mrr"] = (0.9, 0.8, 0.1, 0.1)[epoch]  # the early epochs' measure must not be chosen

    settings = Settings(image_size=64, latent_dim=8, **TINY_ARCHITECTURE, epochs=4, batch_size=8, seed=0, workers=1, patience=1,
                        early_size=32, early_share=0.5, local_crops=2, local_size=16, lr_schedule="cosine")
    autoencoder, history = fit_autoencoder(write_images(tmp_path, 30), settings, Skipped(), lambda f, m: None, 0.85,
                                           min_steps=8, max_steps=8, callbacks=[Sizes()])
    assert sizes == [32, 32, 64, 64] and history["steps"] == 8 and history["early_steps"] == 4
    assert history["best_epoch"] == 3 and autoencoder.input_shape == (None, 64, 64, 3)


def test_new_training_settings_are_checked():
    for bad in (dict(early_size=48), dict(early_share=1.0), dict(local_size=20), dict(teacher_momentum=1.0),
                dict(pooling="max"), dict(lr_schedule="step"), dict(train_seconds=-1)):
        with pytest.raises(ValueError):
            Settings(**bad)


def test_a_callback_given_to_the_fit_sees_one_run_whatever_the_fit_calls_per_epoch(tmp_path):
    """Each epoch is a `fit` call of its own; a callback (the first-model preview) still sees one train begin and
    end, the run's epoch count in params and every epoch's end in order."""
    import keras

    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, self.params["epochs"], "twin_mrr" in logs))

        def on_train_end(self, logs=None):
            seen.append("end")

    settings = Settings(image_size=32, latent_dim=8, **TINY_ARCHITECTURE, epochs=3, batch_size=8, seed=0, workers=1, patience=5)
    fit_autoencoder(write_images(tmp_path, 30), settings, Skipped(), lambda f, m: None, 0.85, min_steps=3, max_steps=3,
                    callbacks=[Watch()])
    assert seen == ["begin", (0, 3, True), (1, 3, True), (2, 3, True), "end"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's tracing")
def test_the_training_step_makes_no_variable_so_tensorflow_traces_it_once(tmp_path):
    """A tf.function that creates variables on its first call is traced a second time; Keras (TensorFlow, no
    distribution strategy) left Adam's slots to the first step, which doubled the cost of starting a training
    (the tiny model's first step: 18.6-24.6 s, then 9.0-9.8 s with the slots made before)."""
    import tensorflow as tf

    made = []

    def creator(next_creator, **kwargs):
        made.append((kwargs.get("name"), tf.inside_function()))
        return next_creator(**kwargs)

    settings = Settings(image_size=32, latent_dim=8, **TINY_ARCHITECTURE, epochs=1, batch_size=8, seed=0, workers=1)
    with tf.variable_creator_scope(creator):
        fit_autoencoder(write_images(tmp_path, 20), settings, Skipped(), lambda f, m: None, 0.85, min_steps=2,
                        max_steps=2)
    assert any(name.endswith("_velocity") for name, _ in made)  # Adam's slots were seen being made
    assert [name for name, traced in made if traced] == []
