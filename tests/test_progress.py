"""imgsim.core.progress: a message's numbers survive every way the core adds text to it."""

from imgsim.core.progress import Event, annotate, data_of


def test_annotating_an_event_keeps_its_data_and_adds_the_text():
    event = Event("epoch 1/2 · loss 0.4000", epoch=1, epochs=2, loss=0.4)
    wrapped = annotate(annotate(event, before="first model: "), after=" · a first model is ready")
    assert str(wrapped) == "first model: epoch 1/2 · loss 0.4000 · a first model is ready"
    assert data_of(wrapped) == {"epoch": 1, "epochs": 2, "loss": 0.4}


def test_an_event_is_not_text_so_formatting_it_cannot_pass_for_keeping_it():
    event = Event("epoch 1/2", epoch=1)
    formatted = f"first model: {event}"
    assert not isinstance(event, str) and data_of(formatted) == {}  # the text only: what annotate exists for
    assert annotate("plain text", after="!") == "plain text!" and data_of("plain text") == {}
