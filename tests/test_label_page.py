"""The Label page as a labelling workspace, and labelling a selection on the Explore page (AppTest).

Labels are checked where they are stored (imgsim.storage.annotations.LabelStore), never only on the page.
"""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from imgsim import Settings, labelling
from imgsim.core.text import markdown_text
from imgsim.storage import store
from imgsim.storage.annotations import LabelStore
from imgsim.storage.group_names import Label, load_labels, save_labels, set_name
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "[x](http://evil.example) <b>b</b> =1+1"


@pytest.fixture
def model_settings(model_copy, tiny_collection) -> Settings:
    from pages import common

    version = store.load_version(model_copy)
    # The pages load the model for searching in a background thread; nothing here searches, so skip that load.
    common._preloaded.add((str(model_copy), version.id))
    return Settings(model_dir=model_copy, images=tiny_collection, **TINY)


@pytest.fixture
def version(model_settings) -> store.Version:
    return store.load_version(model_settings.model_dir)


def open_page(settings: Settings, page: str = "pages/label.py", state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=120)
    at.session_state["settings"] = settings
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def tab(at: AppTest, name: str) -> AppTest:
    """Open one of the Label page's tabs (only the open one is drawn), as a click on it would."""
    at.session_state["label-tab"] = name
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def give(settings: Settings, version: store.Version, rows_and_labels: dict[int, str]) -> None:
    """A person's labels, as the command line would set them."""
    for row, name in rows_and_labels.items():
        LabelStore(settings.model_dir).set([int(version.ids[row])], name, paths={int(version.ids[row]): version.paths[row]})


def stored(settings: Settings, version: store.Version) -> dict[int, str]:
    """Row -> the stored label."""
    labels = LabelStore(settings.model_dir).load()
    return {row: labels[int(i)].label for row, i in enumerate(version.ids.tolist()) if int(i) in labels}


def cards(at: AppTest) -> list[int]:
    """The image ids of the suggestions shown, in order (from their label pickers' keys)."""
    return [int(s.key.split("-")[1]) for s in at.selectbox if s.key and s.key.startswith("q-") and s.key.endswith("-new")]


def progress(at: AppTest) -> str:
    [line] = [m.value for m in at.markdown if "labelled by you" in m.value]
    return line


def rendered(at: AppTest) -> list[str]:
    """Every text the page renders as Markdown: text elements, captions, notices, button labels, toasts."""
    kinds = ("markdown", "caption", "title", "subheader", "info", "warning", "error", "success", "toast")
    return ([str(e.value) for kind in kinds for e in getattr(at, kind)]
            + [b.label for b in at.button] + [s.label for s in at.selectbox] + [b.proto.help for b in at.button])


def test_the_page_opens_with_progress_and_a_queue(model_settings, version):
    at = open_page(model_settings)
    assert not at.error
    assert progress(at) == f"**0** labelled by you · **0** propagated at 90% or more · **{len(version)}** unsure"
    # the assistant's suggestions, best first, each with a picker for a new label
    assert cards(at) == [int(version.ids[s.row]) for s in labelling.suggest(version, 8)] and cards(at)
    assert at.get("download_button")  # the CSV
    # only the open tab is drawn: no review list, no group name field until their tab is opened
    assert not at.text_input and not {"Likely mistakes", "All groups"} & {e.value for e in at.subheader}
    assert tab(at, "Groups").text_input(key=f"name-{version.id}-0") and not cards(at)
    assert "Likely mistakes" in [e.value for e in tab(at, "Review").subheader] and not at.text_input
    tab(at, "Next to label")

    give(model_settings, version, {0: "cats", 1: "dogs"})
    at.run()
    assert progress(at).startswith("**2** labelled by you")
    assert {int(version.ids[0]), int(version.ids[1])}.isdisjoint(cards(at))  # never asked again


def test_one_click_on_a_suggested_label_stores_it_and_the_queue_moves_on(model_settings, version):
    give(model_settings, version, {0: "cats", 1: "dogs"})
    at = open_page(model_settings)
    first = cards(at)[0]
    [row] = np.flatnonzero(version.ids == first).tolist()
    buttons = [b for b in at.button if b.key and b.key.startswith(f"q-{first}-")]
    assert sorted(b.label for b in buttons) == ["cats", "dogs"]
    # suggested first, and highlighted: on the focused card the best guess is the primary button Enter presses,
    # on the others the first label button is primary
    guess = labelling.propagate(version, LabelStore(model_settings.model_dir).load()).name(row)
    assert guess in ("cats", "dogs") and buttons[0].label == guess
    [enter] = [b for b in at.button if b.key == f"guess-{first}"]
    assert enter.proto.type == "primary" and guess in enter.label
    after = cards(at)[1]
    others = [b for b in at.button if b.key and b.key.startswith(f"q-{after}-")]
    assert others[0].proto.type == "primary" and all(b.proto.type == "secondary" for b in others[1:])
    buttons[-1].click().run()
    assert stored(model_settings, version) == {0: "cats", 1: "dogs", row: buttons[-1].label}
    assert LabelStore(model_settings.model_dir).load()[first].via == "set"
    assert first not in cards(at) and cards(at) and progress(at).startswith("**3** labelled by you")
    assert not at.error

    second = cards(at)[0]  # an existing label picked in the card's box
    at.selectbox(key=f"q-{second}-new").select("cats").run()
    assert LabelStore(model_settings.model_dir).load()[second].label == "cats" and second not in cards(at)


def test_accept_all_labels_the_sure_ones_and_no_label_a_person_gave(model_settings, version):
    give(model_settings, version, {0: "cats", 1: "dogs"})
    at = open_page(model_settings)
    at.slider(key="label-confidence").set_value(0.5).run()
    [button] = [b for b in at.button if b.key == "accept"]
    count = int(button.label.split()[1])
    assert button.label == f"Accept {count} propagated labels at 50% or more" and count > 0

    # Before the click, someone labels an image at the command line, differently from its propagated label:
    # the click must not overwrite it with what the page showed.
    propagation = labelling.propagate(version)
    late = int(np.flatnonzero(~propagation.person & (propagation.confidence >= 0.5))[0])
    give(model_settings, version, {late: "dogs" if propagation.name(late) == "cats" else "cats"})
    people = LabelStore(model_settings.model_dir).load()
    button.click().run()
    labels = LabelStore(model_settings.model_dir).load()
    assert {i: labels[i] for i in people} == people  # every person's label as it was, how and when given
    fresh = labelling.propagate(version, labels=people)  # what the click saw
    accepted = {row for row, i in enumerate(version.ids.tolist()) if int(i) in labels and labels[int(i)].via == "accept"}
    assert accepted == set(np.flatnonzero(~fresh.person & (fresh.label >= 0) & (fresh.confidence >= 0.5)).tolist())
    assert all(labels[int(version.ids[row])].label == fresh.name(row) for row in accepted)
    assert len(accepted) >= count - 1 and any("Accepted" in t.value for t in at.toast)


def test_undo_reverts_the_last_change(model_settings, version):
    give(model_settings, version, {0: "cats", 1: "dogs"})
    before = stored(model_settings, version)
    at = open_page(model_settings)
    assert at.button(key="undo").label == "Undo labelling 1 image “dogs”"  # the command line's change, last
    first = cards(at)[0]
    at.button(key=f"q-{first}-0").click().run()
    assert stored(model_settings, version) != before
    name = LabelStore(model_settings.model_dir).load()[first].label
    assert at.button(key="undo").label == f"Undo labelling 1 image “{name}”"
    at.button(key="undo").click().run()
    assert stored(model_settings, version) == before and not at.exception
    assert any("Undone" in t.value for t in at.toast)
    assert at.button(key="undo").label == "Undo labelling 1 image “dogs”"


def test_a_group_name_labels_its_images_but_not_those_a_person_labelled(model_settings, version):
    group = int(version.groups[0])
    rows = np.flatnonzero(version.groups == group).tolist()
    set_name(model_settings.model_dir, version.id, group, "brick walls")
    give(model_settings, version, {rows[0]: "cats"})
    at = open_page(model_settings, state={"label_group": group, "label-tab": "Groups"})
    apply = at.button(key=f"apply-{version.id}-{group}")
    assert apply.label == f"Apply this group's name to its {len(rows) - 1} images"
    apply.click().run()
    labels = LabelStore(model_settings.model_dir).load()
    assert stored(model_settings, version) == {rows[0]: "cats", **{row: "brick walls" for row in rows[1:]}}
    assert {labels[int(version.ids[row])].via for row in rows[1:]} == {"group"}


def test_a_group_name_with_a_zero_width_space_is_refused_in_words_and_the_group_stays_open(model_settings, version):
    group = int(version.groups[0])
    set_name(model_settings.model_dir, version.id, group, "cats")
    at = open_page(model_settings, state={"label_group": group, "label-tab": "Groups"})
    at.text_input(key=f"name-{version.id}-{group}").input("brick\u200bwalls")
    at.button(key=f"FormSubmitter:form-{version.id}-{group}-Save and next").click().run()
    assert not at.exception
    assert any("holds control or unprintable characters" in e.value for e in at.error)
    assert at.selectbox(key="label_group").value == group  # not moved on: the name can be mended here
    assert load_labels(model_settings.model_dir, version.id)[group].name == "cats"


def test_readonly_shows_progress_and_lists_without_controls_and_ignores_replayed_clicks(model_settings, version,
                                                                                       monkeypatch):
    group = int(next(g for g in np.unique(version.groups) if g != version.groups[0]))  # row 0 keeps "cats" offered
    set_name(model_settings.model_dir, version.id, group, "brick walls")
    give(model_settings, version, {0: "cats", 1: "dogs"})
    before = stored(model_settings, version)

    monkeypatch.setenv("IMGSIM_READONLY", "1")
    visitor = open_page(model_settings, state={"label_group": group})
    assert progress(visitor).startswith("**2** labelled by you")
    images, subheaders = {}, set()
    for name in ("Next to label", "Review", "Groups"):
        tab(visitor, name)
        images[name] = len(visitor.image)
        subheaders |= {e.value for e in visitor.subheader}
        assert not visitor.text_input and not [s for s in visitor.selectbox if s.key != "label_group"], name
        assert [b.label for b in visitor.button] == [], f"{name}: no label, accept, undo, apply or name buttons"
        assert visitor.get("download_button")
    assert {"Likely mistakes", "Outliers", "All groups"} <= subheaders

    for key in ("q-0", "accept", "undo", f"apply-{version.id}-{group}", "picker"):  # each replayed by a crafted client
        monkeypatch.delenv("IMGSIM_READONLY")
        name = "Groups" if key.startswith("apply") else "Next to label"
        writer = open_page(model_settings, state={"label_group": group, "label-confidence": 0.5, "label-tab": name})
        assert len(writer.image) == images[name]  # drawn when allowed; a visitor sees the same suggestions and lists
        first = (cards(writer) or [None])[0]  # None on the Groups tab
        monkeypatch.setenv("IMGSIM_READONLY", "1")
        if key == "picker":
            writer.selectbox(key=f"q-{first}-new").select("dogs").run()
        else:
            writer.button(key=f"q-{first}-0" if key == "q-0" else key).click().run()
        assert stored(model_settings, version) == before, key
        assert any("read-only" in e.value for e in writer.error), key


def test_a_label_that_looks_like_markup_is_shown_as_text(model_settings, version):
    group = int(version.groups[0])
    save_labels(model_settings.model_dir, version.id, {group: Label("brick walls", carried=True, merged=(HOSTILE,))})
    give(model_settings, version, {0: HOSTILE, 1: "dogs"})
    at = open_page(model_settings, state={"label_group": group, "label-tab": "Groups"})
    shown = [text for text in rendered(at) if "evil" in text]
    [warning] = at.warning
    shown += [text for text in rendered(tab(at, "Next to label")) if "evil" in text]
    assert len(shown) > 1, "the label appears on buttons and in the merged-names warning"
    for text in shown:
        # escaped, and a bare URL broken by an invisible word joiner (Markdown links those after unescaping)
        assert "](" not in text and "<b>" not in text and "\\[x\\]\\(http\\:\u2060//evil" in text, text
    assert warning.value == ("After retraining, most images named “brick walls” and “"
                             + markdown_text(HOSTILE).replace("http\\://", "http\\:\u2060//")
                             + "” are in this group; pick one name or type another.")

    first = cards(at)[0]
    [button] = [b for b in at.button if b.key and b.key.startswith(f"q-{first}-") and "evil" in b.label]
    button.click().run()
    assert LabelStore(model_settings.model_dir).load()[first].label == HOSTILE  # stored as typed
    assert all("](" not in t.value and "\\[x\\]" in t.value for t in at.toast if "evil" in t.value) and at.toast


def test_the_csv_download_holds_every_image_and_no_server_path(model_settings, version, tiny_collection, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    deferred = []  # AppTest does not fetch a download: keep the page's callable to call it as a click would
    original = MediaFileManager.add_deferred

    def keep(self, data, *args, **kwargs):
        deferred.append(data)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    give(model_settings, version, {0: "=1+1 cats", 1: "dogs"})
    open_page(model_settings)
    [make] = deferred
    text = make()
    assert str(tiny_collection) not in text and "/tmp" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(version) and list(rows[0]) == ["path", "label", "source", "confidence", "group",
                                                           "group_name"]
    assert {row["path"] for row in rows} == {str(Path(p).relative_to(tiny_collection)) for p in version.paths}
    by_path = {row["path"]: row for row in rows}
    first = by_path[str(Path(version.paths[0]).relative_to(tiny_collection))]
    assert first["label"] == "'=1+1 cats" and first["source"] == "person"  # never a spreadsheet formula
    assert {row["source"] for row in rows} <= {"person", "propagated", "none"}


def test_explore_labels_exactly_the_selected_images_and_a_whole_group(model_settings, version):
    give(model_settings, version, {0: "cats"})
    group = int(next(g for g in np.unique(version.groups) if g != version.groups[0]))  # row 0 keeps "cats" offered
    set_name(model_settings.model_dir, version.id, group, "brick walls")  # named before the page is first drawn
    chosen = [3, 7, 11]
    selection = {"selection": {"points": [{"customdata": row} for row in chosen], "point_indices": [],
                               "box": [], "lasso": []}}
    at = open_page(model_settings, "pages/explore.py", state={f"map-{version.id}": selection})
    assert f"{len(chosen)} selected" in [h.value for h in at.subheader]
    at.selectbox(key="label-selection-name").select("cats")
    at.button(key=f"FormSubmitter:label-selection-Label {len(chosen)} images").click().run()
    assert not at.exception and not at.error
    assert stored(model_settings, version) == {0: "cats", **{row: "cats" for row in chosen}}

    at.segmented_control(key="group").set_value(group).run()
    rows = np.flatnonzero(version.groups == group).tolist()
    assert at.selectbox(key=f"label-group-{group}-name").value == "brick walls"  # the group's name, offered
    at.button(key=f"FormSubmitter:label-group-{group}-Label {len(rows)} images").click().run()
    after = stored(model_settings, version)
    assert {row for row, name in after.items() if name == "brick walls"} == set(rows)

    at.toggle(key="colour-by-label").set_value(True).run()  # the map coloured by label
    assert not at.exception
    traces = {t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert {"cats", "brick walls"} <= traces


def test_a_damaged_labels_file_is_one_plain_line_and_no_path_for_a_visitor(model_settings, version, monkeypatch):
    give(model_settings, version, {0: "cats", 1: "dogs"})
    at = open_page(model_settings)
    first = cards(at)[0]
    damaged = model_settings.model_dir / "annotations" / "labels.json"
    damaged.write_text("{not json", encoding="utf-8")  # edited by hand, say, after the page was drawn
    at.button(key=f"q-{first}-0").click().run()
    assert not at.exception and damaged.read_text() == "{not json"  # nothing written over it
    assert at.error and all("unreadable" in e.value for e in at.error)  # the click's refusal and the page's own line
    assert progress(at).startswith("**0** labelled by you")

    monkeypatch.setenv("IMGSIM_READONLY", "1")
    visitor = open_page(model_settings)
    assert [e.value for e in visitor.error] == ["The labels file cannot be read; the labels are not shown."]


def test_hand_edited_annotation_files_leave_the_page_working(model_settings, version):
    """Issue 28: a key "²" (isdigit, then int() failed), a summary of the wrong types and deep nesting crashed the page."""
    give(model_settings, version, {0: "cats"})
    path = model_settings.model_dir / "annotations" / "labels.json"
    body = json.loads(path.read_text())
    body["labels"]["²"] = {"label": "superscript"}
    body["undoable"] = {"op": ["x"], "action": ["set"], "label": {"b": 1}, "count": 1, "at": 5}
    path.write_text(json.dumps(body))
    with open(model_settings.model_dir / "annotations" / "log.jsonl", "a") as log:
        log.write('\n{"op": ["x"], "action": "set", "undoes": ["y"], "count": 1, "before": {"²": null}}\n')
    at = open_page(model_settings)
    assert progress(at).startswith("**1** labelled by you") and at.button(key="undo").label == "Undo the last change to 1 image"
    at.button(key="undo").click().run()
    assert not at.exception and stored(model_settings, version) == {}

    path.write_text("[" * 200_000 + "]" * 200_000)
    at = open_page(model_settings)
    assert [e.value for e in at.error] and all("unreadable" in e.value and "RecursionError" in e.value for e in at.error)


def search_for(settings: Settings, version: store.Version, row: int) -> AppTest:
    """The Search page, queried with a collection image."""
    return open_page(settings, "pages/search.py", state={"how": "Collection", "pick": version.paths[row]})


def ticks(at: AppTest) -> dict[int | str, object]:
    """The Search page's selection boxes: image id (or "query") -> checkbox."""
    boxes = {c.key.rsplit("-", 1)[1]: c for c in at.checkbox if c.key and c.key.startswith("tick-")}
    return {key if key == "query" else int(key): box for key, box in boxes.items()}


SEND = "FormSubmitter:label-results-Label the selected images"


def test_search_labels_exactly_the_ticked_results_and_the_query(model_settings, version):
    give(model_settings, version, {0: "cats"})
    query = 5
    at = search_for(model_settings, version, query)
    boxes = ticks(at)
    shown = [i for i in boxes if i != "query"]
    assert len(shown) == 8 and len(at.image) == 1 + 8 and int(version.ids[query]) not in shown
    assert all(box.value for box in boxes.values()) and "query" in boxes  # all ticked, the query too
    row_of = {int(i): row for row, i in enumerate(version.ids.tolist())}
    left_out = {shown[1], shown[4]}
    for image_id in left_out:
        boxes[image_id].uncheck()
    at.selectbox(key="label-results-name").select("cats")
    at.button(key=SEND).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = {0: "cats", query: "cats", **{row_of[i]: "cats" for i in shown if i not in left_out}}
    assert stored(model_settings, version) == expected
    assert {LabelStore(model_settings.model_dir).load()[int(version.ids[r])].via for r in expected if r} == {"set"}
    assert any("Labelled 7 images" in t.value for t in at.toast)
    # drawn again with what each result is labelled now; the boxes left unticked stay so
    assert all("labelled “cats”" in box.label for i, box in ticks(at).items() if i not in left_out)
    assert [i for i, box in ticks(at).items() if not box.value] == sorted(left_out, key=shown.index)

    for box in ticks(at).values():  # nothing ticked: nothing labelled, said in words
        box.uncheck()
    at.selectbox(key="label-results-name").select("cats")
    at.button(key=SEND).click().run()
    assert stored(model_settings, version) == expected and [e.value for e in at.error] == ["Tick at least one image first."]


def test_search_results_for_a_visitor_have_no_form_and_a_replayed_send_changes_nothing(model_settings, version,
                                                                                       monkeypatch):
    give(model_settings, version, {0: "cats"})
    before = stored(model_settings, version)
    monkeypatch.setenv("IMGSIM_READONLY", "1")
    visitor = search_for(model_settings, version, 5)
    assert len(visitor.image) == 1 + 8 and not visitor.checkbox
    assert [s.key for s in visitor.selectbox] == ["pick"] and not [b for b in visitor.button if b.key == SEND]

    monkeypatch.delenv("IMGSIM_READONLY")
    writer = search_for(model_settings, version, 5)  # drawn while allowed, sent by a crafted client after
    assert len(ticks(writer)) == 1 + 8
    monkeypatch.setenv("IMGSIM_READONLY", "1")
    writer.selectbox(key="label-results-name").select("cats")
    writer.button(key=SEND).click().run()
    assert stored(model_settings, version) == before
    assert any("read-only" in e.value for e in writer.error)


def test_galleries_draw_a_bounded_page_of_a_large_group_even_when_browsing_all(tmp_path):
    from pages import common
    from tests.helpers import vector_version

    big, _ = vector_version(tmp_path / "models", 400, 1, seed=4)  # one group of 400 (paths that do not exist)
    common._preloaded.add((str(big.model_dir), big.id))
    settings = Settings(model_dir=big.model_dir, images=tmp_path)
    at = open_page(settings, "pages/explore.py")
    at.toggle(key="all-group-0").set_value(True).run()
    assert not at.exception and [len(gallery.value) for gallery in at.image] == [60]  # page 1 of 7, not 400
    at = tab(open_page(settings), "Groups")
    at.toggle(key="all-0").set_value(True).run()
    assert not at.exception and [len(gallery.value) for gallery in at.image] == [24]
