"""The Label page's two ways to decide: one image at a time from the keyboard, or a page of look-alikes at once.

Keys are Streamlit's own button shortcuts (`st.button(shortcut=...)`): they are ignored while a
text box has the focus, and only the open tab is drawn, so no hidden button answers a key. On the
grid, Enter pressed on a tick box or on the grid's open tab is sent to the form's button by a small
script (GRID_ENTER). On the focused suggestion: 1-9 and the letters below pick one of its likeliest
labels, Enter takes the assistant's best guess, the arrows move between suggestions, G opens a page
of look-alikes; Z undoes (pages/label.py). The queue is a batch: it is chosen once and worked through, so a
decision costs a propagation, not a new choice of what to ask.
"""

import zlib

import numpy as np
import streamlit as st
from threadpoolctl import threadpool_limits

from imgsim import labelling
from imgsim.core.text import one_line
from pages import common

QUEUE = 8  # suggestions shown at a time
PER_ROW = 4
BUTTONS = 4  # label buttons on a suggestion that has not the focus
DIGITS = "123456789"
LETTERS = "abdefhijklmnopqtuvwxy"  # C and R are Streamlit's; G opens the grid, S skips, Z undoes
GUESS = 0.5  # a best guess less likely right than this is offered but not highlighted
GRID = 24  # look-alikes on a page
TAB = "A page at once"  # the grid's tab on the Label page (pages/label.TABS)
# Streamlit's key shortcuts ignore a key pressed while an <input> has the focus, and a tick box clicked
# by mouse keeps it: Enter then reached nothing. So did Enter right after the grid's tab was clicked: the
# focused tab took the key (a tab already open does nothing with it). This sends Enter pressed on one of the
# grid's tick boxes, or on the open tab while the grid is drawn, to the form's button (Enter does nothing of
# its own there; Space still ticks). Only the open tab is drawn, so on another tab there is no grid to send to.
# A fixed script, installed once per browser tab; nothing in it comes from a user.
GRID_ENTER = """<script>
if (!window.imgsimGridEnter) {
  window.imgsimGridEnter = true;
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.key !== "Enter" || event.isComposing || event.ctrlKey || event.metaKey || event.altKey
        || event.shiftKey || !(target instanceof HTMLElement)) return;
    const tick = target instanceof HTMLInputElement && target.type === "checkbox";
    const openTab = target.getAttribute("role") === "tab" && target.getAttribute("aria-selected") === "true";
    if (!tick && !openTab) return;
    const grid = tick ? target.closest(".st-key-grid-page") : document.querySelector(".st-key-grid-page");
    const send = grid?.querySelector('[data-testid="stFormSubmitButton"] button');
    if (!send || send.disabled) return;
    event.preventDefault();
    send.click();
  }, true);
}
</script>"""


@common.cache_resource(max_entries=4, show_spinner="Choosing what to ask next…")
def suggestions(model_dir: str, version_id: str, key: str, _labels: dict) -> list:
    """What to label next (imgsim.labelling.suggest), once per version and labels: `key` is their state key."""
    version = common.load_version(model_dir, version_id)
    with threadpool_limits(1):  # BLAS threads would spin against a training run on the same cores
        return labelling.suggest(version, QUEUE, common.propagation(model_dir, version, _labels, key))


def queue(model_dir: str, version, propagation, labels: dict, key: str) -> list:
    """This session's batch of suggestions still unlabelled; a new batch once every one of them is labelled."""
    batch = st.session_state.get("label-queue")
    if batch is not None and batch["version"] == (model_dir, version.id):
        left = [item for item in batch["items"] if not propagation.person[item.row]]
        if left:
            return left
    items = suggestions(model_dir, version.id, key, labels)
    st.session_state["label-queue"] = {"version": (model_dir, version.id), "items": items}
    st.session_state["label-focus"] = 0
    return items


def move(step: int, count: int) -> None:
    """Button callback (the arrow keys): the focus to the previous or next suggestion."""
    st.session_state["label-focus"] = (st.session_state.get("label-focus", 0) + step) % max(count, 1)


def open_grid() -> None:
    st.session_state["label-tab"] = TAB


def keys_for(names: list[str]) -> list[str]:
    return list((DIGITS + LETTERS.upper())[:len(names)])


def likely_labels(propagation, row: int, count: int) -> list[str]:
    """The row's likeliest labels, best first; every label while there are few, never one no neighbour gives weight to."""
    scores = propagation.scores[row] if propagation.classes else np.zeros(0)
    order = np.argsort(-scores, kind="stable").tolist()
    return [propagation.classes[c] for c in order if scores[c] > 0 or len(order) <= BUTTONS][:count]


def guess_text(name: str | None, probability: float) -> str:
    if name and probability >= GUESS:
        return f"Best guess **{common.md(name)}**, {probability:.0%} likely right"
    if name:
        return f"Unsure: perhaps **{common.md(name)}** ({probability:.0%} likely)"
    return "No guess yet: label it"


def card(item, version, propagation, writable: bool, model_dir: str, focused: bool) -> None:
    """One suggestion: its image, the best guess as a probability, and a button per likely label."""
    image_id, row = int(version.ids[item.row]), item.row
    name, probability = propagation.name(row), float(propagation.confidence[row])
    st.image(common.thumbnail(item.path, 192, version), width="stretch")
    st.caption(common.md(common.short_name(item.path, version)))
    st.markdown(guess_text(name, probability))
    st.caption(common.md(item.reason))
    if not writable:
        return
    likely = likely_labels(propagation, row, len(DIGITS + LETTERS) if focused else BUTTONS)
    if name:
        likely = [name, *(n for n in likely if n != name)][:len(likely) or 1]
    callback = {"on_click": common.label_rows, "args": (model_dir, version.id, (row,))}
    shortcuts = keys_for(likely) if focused else [None] * len(likely)
    if focused and name:
        st.button(f"{common.md(common.quoted(name, 30))}: that's it", key=f"guess-{image_id}", shortcut="Enter",
                  type="primary", icon=":material/check:", kwargs={"name": name, "where": "label"}, **callback)
    with st.container(horizontal=True, gap="small"):
        for j, (label, shortcut) in enumerate(zip(likely, shortcuts)):
            st.button(common.md(common.quoted(label, 30)[1:-1]), key=f"q-{image_id}-{j}", shortcut=shortcut,
                      type="primary" if label == name and probability >= GUESS and not focused else "secondary",
                      kwargs={"name": label, "where": "label"}, **callback)
    common.label_picker("Another label", propagation.classes, key=f"q-{image_id}-new", label_visibility="collapsed",
                        placeholder="Another label…" if propagation.classes else "Type a label…",
                        on_change=common.label_rows, args=callback["args"],
                        kwargs={"name_key": f"q-{image_id}-new", "where": "label"})


def queue_tab(cfg, version, propagation, labels, key: str, writable: bool) -> None:
    model_dir = str(cfg.model_dir)
    items = queue(model_dir, version, propagation, labels, key)
    if not items:
        st.success("You have labelled every image.")
        return
    focus = min(st.session_state.get("label-focus", 0), len(items) - 1)
    st.caption("The images whose labels would help most: first the most typical image of each part of the collection "
               "that holds no label of yours, then the ones the assistant is least sure of. "
               + ("Keys on the highlighted one: 1–9 and letters pick a label, Enter takes the best guess, ← → move, "
                  "Z undoes, G opens a page of look-alikes." if writable else ""))
    if writable:
        with st.container(horizontal=True, gap="small"):
            st.button("Previous", key="focus-prev", shortcut="Left", icon=":material/arrow_back:",
                      on_click=move, args=(-1, len(items)))
            st.button("Next", key="focus-next", shortcut="Right", icon=":material/arrow_forward:",
                      on_click=move, args=(1, len(items)))
            st.button("A page of look-alikes", key="open-grid", shortcut="G", icon=":material/grid_view:",
                      on_click=open_grid)
    for start in range(0, len(items), PER_ROW):
        for column, (i, item) in zip(st.columns(PER_ROW), list(enumerate(items))[start:start + PER_ROW]):
            focused = i == focus and writable
            with column.container(border=True, key=f"card-{'focus' if focused else i}"):
                card(item, version, propagation, writable, model_dir, focused)


def grid_rows(propagation, name: str, skipped: set, ids) -> list[int]:
    """Unlabelled images propagated to `name`, likeliest first, without those unticked before in this session."""
    c = propagation.classes.index(name)
    rows = np.flatnonzero(~propagation.person & (propagation.label == c))
    return [r for r in rows[np.argsort(-propagation.confidence[rows], kind="stable")].tolist() if int(ids[r]) not in skipped]


def waiting(propagation, skipped: set, ids) -> np.ndarray:
    """How many unlabelled images each class has waiting for a page (those unticked before left out)."""
    rows = np.flatnonzero(~propagation.person & (propagation.label >= 0))
    rows = [r for r in rows.tolist() if int(ids[r]) not in skipped]
    return np.bincount(propagation.label[rows], minlength=len(propagation.classes))


def label_ticked(model_dir: str, version_id: str, rows: tuple, name: str) -> None:
    """Form callback: the ticked images get the label (one change, one undo); the unticked are not shown again."""
    version = common.load_version(model_dir, version_id)
    ticked = [r for r in rows if st.session_state.get(f"look-{version_id}-{int(version.ids[r])}", True)]
    skipped = st.session_state.setdefault("grid-skipped", set())
    skipped.update(int(version.ids[r]) for r in rows if r not in ticked)
    if ticked:
        common.label_rows(model_dir, version_id, ticked, name=name, where="label")


def skip_page(version, rows: list[int]) -> None:
    st.session_state.setdefault("grid-skipped", set()).update(int(version.ids[r]) for r in rows)


def grid_tab(cfg, version, propagation, writable: bool) -> None:
    """A page of images the assistant gives one label: untick the exceptions, Enter labels the rest."""
    if not propagation.classes:
        st.info("Label a few images first: this page shows the images your labels spread to.")
        return
    skipped = st.session_state.get("grid-skipped", set())
    counts = waiting(propagation, skipped, version.ids)
    current = st.session_state.get("grid-label")
    if current not in propagation.classes or not counts[propagation.classes.index(current)]:
        current = propagation.classes[int(np.argmax(counts))]  # the label with most waiting
    # A new widget whenever the counts change: one kept by its key showed the counts it was first drawn with
    # ("dogs (13)" over the 9 left once a page was labelled).
    name = st.selectbox("Images the assistant labels", propagation.classes, index=propagation.classes.index(current),
                        key=f"grid-label-{zlib.crc32(counts.tobytes()):08x}",
                        format_func=lambda n: f"{one_line(n)} ({counts[propagation.classes.index(n)]:,})")
    st.session_state["grid-label"] = name
    rows = grid_rows(propagation, name, skipped, version.ids)[:GRID]
    if not rows:
        st.success("No unlabelled image is left for a page.")
        return
    if not writable:
        st.image([common.thumbnail(version.paths[r], 128, version) for r in rows], width=128,
                 caption=[f"{float(propagation.confidence[r]):.0%}" for r in rows])
        return
    st.caption("Likeliest first, each with the probability that it is right. Untick the ones that are not, then "
               "press Enter: the ticked ones get the label, the unticked are not shown again.")
    st.html(GRID_ENTER, width="content", unsafe_allow_javascript=True)
    with st.container(key="grid-page"), st.form(f"grid-{version.id}", border=False, enter_to_submit=False):
        for start in range(0, len(rows), 6):
            for column, row in zip(st.columns(6), rows[start:start + 6]):
                column.image(common.thumbnail(version.paths[row], 128, version), width="stretch",
                             caption=common.md(common.short_name(version.paths[row], version)))
                column.checkbox(f"{float(propagation.confidence[row]):.0%}", value=True,
                                key=f"look-{version.id}-{int(version.ids[row])}")
        st.form_submit_button(f"Label the ticked {common.md(common.quoted(name, 30))}", type="primary",
                              shortcut="Enter", on_click=label_ticked,
                              args=(str(cfg.model_dir), version.id, tuple(rows), name), icon=":material/done_all:")
    st.button("Skip this page", key="grid-skip", shortcut="S", on_click=skip_page, args=(version, rows))
