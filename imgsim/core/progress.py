"""Progress messages that carry their numbers as data: a training run's epoch, loss and measures.

Every long call in imgsim reports through a plain `progress(fraction, message)` function (STYLE.md):
the command line shows the message on a bar, the dashboard in `st.progress`. A message is text, or
an `Event` when it also has numbers: `str(event)` is what a person reads, and whoever wants the
numbers (the background job's status file, then the Train page's curves) reads `event.data`
instead of parsing the text. An Event is not a string, so formatting it can never pass for
keeping it: text is added with `annotate`, which keeps the data.
"""

from __future__ import annotations


class Event:
    """A progress message with data: `epoch` (1-based), `epochs`, `loss`, and at an epoch's end `measures`
    (that epoch's logs: loss, twin_mrr ...)."""

    __slots__ = ("text", "data")

    def __init__(self, text: str, **data):
        self.text = str(text)
        self.data = data

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Event({self.text!r}, **{self.data!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Event) and (self.text, self.data) == (other.text, other.data)

    __hash__ = None


def annotate(message, before: str = "", after: str = ""):
    """`message` with text added before and after it; an Event stays an Event with the same data."""
    if isinstance(message, Event):
        return Event(before + message.text + after, **message.data)
    return before + str(message) + after


def data_of(message) -> dict:
    """The numbers a progress message carries (none for plain text)."""
    return dict(message.data) if isinstance(message, Event) else {}
