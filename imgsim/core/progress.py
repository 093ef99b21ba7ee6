"""Progress messages that carry their numbers as data: a training run's epoch, loss and measures.

Every long call in imgsim reports through a plain `progress(fraction, message)` function (STYLE.md):
the command line shows the message on a bar, the dashboard in `st.progress`. A message that also has
numbers is an `Event`: it is the text a person reads, and whoever wants the numbers (the background
job's status file, then the Train page's curves) reads `event.data` instead of parsing the text.
"""

from __future__ import annotations


class Event(str):
    """A progress message with data: `epoch` (1-based), `epochs`, `loss`, and at an epoch's end `measures`
    (that epoch's logs: loss, twin_mrr ...). Adding text to it keeps the data."""

    data: dict

    def __new__(cls, text: str, **data) -> Event:
        event = super().__new__(cls, text)
        event.data = data
        return event

    def __add__(self, other: str) -> Event:
        return Event(str(self) + other, **self.data)


def data_of(message) -> dict:
    """The numbers a progress message carries (none for plain text)."""
    return dict(message.data) if isinstance(message, Event) else {}
