"""Who may change things: the write policy itself, and the dashboard enforcing it (AppTest)."""

import json
import socket
import time
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

import imgsim.core.access
from imgsim import Settings
from imgsim.core.access import Access, OwnerCode, PasswordGuesses, allowed_hosts, client_key, is_loopback
from imgsim.core.text import markdown_text
from imgsim.duplicates import scan_and_save
from imgsim.runs import jobs
from imgsim.serve import exposure_warning, streamlit_flags
from imgsim.storage import store
from imgsim.storage.group_names import load_names
from tests.helpers import TINY, running_dashboard

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("", False), (None, False), ("::", False), ("192.168.1.5", False), ("example.org", False),
])
def test_only_loopback_addresses_count_as_local(address, local):
    assert is_loopback(address) is local


def test_policy_local_by_default_password_when_shared_readonly_for_everyone():
    assert Access.from_env("127.0.0.1", environ={}).can_write()
    assert not Access.from_env("0.0.0.0", environ={}).can_write()  # exposed, no password: nobody writes
    guarded = Access.from_env("0.0.0.0", environ={"IMGSIM_PASSWORD": "s3cret"})
    assert not guarded.can_write() and guarded.can_write(unlocked=True)
    assert guarded.check_password("s3cret") and not guarded.check_password("s3cre") and not guarded.check_password("")
    readonly = Access.from_env("127.0.0.1", environ={"IMGSIM_READONLY": "1", "IMGSIM_PASSWORD": "s3cret"})
    assert not readonly.can_write(unlocked=True) and "read-only" in readonly.why_not()
    assert Access.from_env("0.0.0.0", environ={}, secret_password="from-secrets").needs_password


@pytest.fixture(autouse=True)
def fresh_guesses(monkeypatch):
    """The server-wide password back-off starts clean in each test (it lives as long as the process)."""
    monkeypatch.setattr(imgsim.core.access, "GUESSES", PasswordGuesses())


@pytest.fixture
def model_settings(model_copy, tiny_collection) -> Settings:
    return Settings(model_dir=model_copy, images=tiny_collection, **TINY)


def open_page(settings: Settings, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["settings"] = settings
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def exposed():
    """The server as `streamlit run app.py --server.address 0.0.0.0` would run it."""
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    yield
    st_config.set_option("server.address", before)


def labels(at) -> list[str]:
    return [b.label for b in at.button]


def test_a_visitor_without_the_password_cannot_start_training(model_settings, monkeypatch, exposed):
    clock = Clock()
    monkeypatch.setattr(imgsim.core.access, "GUESSES", PasswordGuesses(clock=clock))
    monkeypatch.setenv("IMGSIM_PASSWORD", "correct horse")
    at = open_page(model_settings, "pages/train.py")
    assert "Start training" not in labels(at) and "Make active" not in labels(at)
    assert not [b for b in at.sidebar.button if b.key == "sidebar-retrain"]
    assert any("enter the dashboard password" in e.value for e in at.info)

    at.sidebar.text_input(key="password-attempt").input("wrong horse")
    at.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" not in labels(at)
    assert any("Wrong password" in e.value for e in at.sidebar.error)
    assert not jobs.is_running(model_settings.model_dir) and not jobs.status_path(model_settings.model_dir).exists()

    clock.now += 1.05  # after a wrong guess the server hears none from that address for a second
    at.sidebar.text_input(key="password-attempt").input("correct horse")
    at.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" in labels(at) and [b for b in at.sidebar.button if b.key == "sidebar-retrain"]


def test_a_wrong_password_slows_every_session_from_the_same_address(model_settings, monkeypatch, exposed):
    clock = Clock()
    monkeypatch.setattr(imgsim.core.access, "GUESSES", PasswordGuesses(clock=clock))
    monkeypatch.setenv("IMGSIM_PASSWORD", "correct horse")
    guesser, owner = open_page(model_settings, "pages/train.py"), open_page(model_settings, "pages/train.py")
    guesser.sidebar.text_input(key="password-attempt").input("wrong horse")
    guesser.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert any("Wrong password" in e.value for e in guesser.sidebar.error)

    owner.sidebar.text_input(key="password-attempt").input("correct horse")  # another session, at once
    owner.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" not in labels(owner)
    assert any("Too many wrong passwords" in e.value for e in owner.sidebar.error)
    clock.now += 1.05  # the first wrong guess holds its address back for a second
    owner.sidebar.text_input(key="password-attempt").input("correct horse")
    owner.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" in labels(owner)


def test_the_owner_code_printed_on_the_console_unlocks_while_wrong_guesses_are_held_back(model_settings, monkeypatch,
                                                                                         exposed):
    printed = []
    clock = Clock()  # stands still: a page run slower than the 1 s back-off cannot let the owner's guess through
    monkeypatch.setattr(imgsim.core.access, "GUESSES", PasswordGuesses(code=OwnerCode(say=printed.append), clock=clock))
    monkeypatch.setenv("IMGSIM_PASSWORD", "correct horse")
    guesser, owner = open_page(model_settings, "pages/train.py"), open_page(model_settings, "pages/train.py")
    assert len(printed) == 1  # printed once, when the first password field was drawn
    guesser.sidebar.text_input(key="password-attempt").input("wrong horse")
    guesser.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    owner.sidebar.text_input(key="password-attempt").input("correct horse")  # the same address, held back
    owner.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" not in labels(owner)
    assert any("owner code printed on the server's console" in e.value for e in owner.sidebar.error)
    owner.sidebar.text_input(key="password-attempt").input(printed_code(printed[0]))
    owner.sidebar.button(key="FormSubmitter:unlock-Unlock").click().run()
    assert "Start training" in labels(owner) and len(printed) == 2  # in at once; the next code is printed


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_back_off_doubles_after_each_wrong_guess_and_a_right_one_resets_it():
    policy, clock = Access(password="s3cret"), Clock()
    guesses = PasswordGuesses(clock=clock)
    waits = []
    for _ in range(12):
        guess = guesses.check(policy, "wrong")
        assert guess.heard and not guess.right
        waits.append(guess.wait)
        assert not guesses.check(policy, "s3cret").heard  # during the wait even the right one is not compared
        clock.now += guess.wait
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert guesses.check(policy, "s3cret") == (True, True, 0.0)
    assert guesses.check(policy, "wrong").wait == 1  # a right password starts again from one second
    clock.now += 3 * 3600
    assert guesses.check(policy, "wrong").wait == 1  # so do hours without a wrong one


GUESSER, OWNER = "203.0.113.7", "198.51.100.20"


def printed_code(line: str) -> str:
    return line.split("owner code for this dashboard: ")[1].split()[0]


def guess_for_an_hour(guesses, policy, clock, guessers, owner_tries, per_second=5.0, hours=1.0):
    """Guessers at `per_second` each (simulated clock) and an owner trying `owner_tries()` every 61 s; the owner's results and heard times."""
    heard, owner = [], []
    step, start = 1.0 / per_second, clock.now
    next_owner = start + 30.5
    while clock.now < start + hours * 3600:
        for address in guessers:
            if guesses.check(policy, "wrong guess", address).heard:
                heard.append(clock.now)
        if clock.now >= next_owner:
            owner.append(owner_tries())
            next_owner += 61
        clock.now += step
    return owner, heard


def test_a_guesser_at_5_per_second_for_an_hour_never_holds_back_the_owner_s_right_password():
    """The stated bound: from an address of its own, the owner's right password is heard at once (0 s), every time."""
    policy, clock = Access(password="s3cret"), Clock()
    guesses = PasswordGuesses(clock=clock, code=OwnerCode(say=lambda text: None))
    owner, heard = guess_for_an_hour(guesses, policy, clock, [GUESSER],
                                     lambda: guesses.check(policy, "s3cret", OWNER))
    assert len(owner) == 59 and all(result == (True, True, 0.0) for result in owner)
    assert len(heard) == 20  # at 0, 1, 3 ... 511 s, then every 300 s: the guesser holds back its own address only
    assert len([t for t in heard if t >= clock.now - 3000]) <= 10


def test_a_guesser_sharing_the_owner_s_address_holds_the_password_back_but_never_the_owner_code():
    """The control: as with the old server-wide back-off, a guess timed for each reopening keeps the password out;
    the one-time code from the server's console gets the owner in at once."""
    policy, clock, printed = Access(password="s3cret"), Clock(), []
    guesses = PasswordGuesses(clock=clock, code=OwnerCode(say=printed.append))
    owner, _ = guess_for_an_hour(guesses, policy, clock, [GUESSER], lambda: guesses.check(policy, "s3cret", GUESSER))
    assert owner and not any(result.right for result in owner)  # the attack works on one shared address
    guesses.code.announce()
    [line] = printed
    code = printed_code(line)
    assert guesses.check(policy, code, GUESSER) == (True, True, 0.0)  # while the guesser's back-off runs
    assert not guesses.check(policy, code, GUESSER).right  # once only: a new code is printed
    assert len(printed) == 2 and code not in printed[1]


def test_many_addresses_together_get_at_most_the_ceiling_and_the_owner_code_still_works():
    policy, clock, printed = Access(password="s3cret"), Clock(), []
    guesses = PasswordGuesses(clock=clock, code=OwnerCode(say=printed.append))
    botnet = [f"203.0.113.{i}" for i in range(1, 13)]
    guesses.code.announce()
    owner, heard = guess_for_an_hour(guesses, policy, clock, botnet,
                                     lambda: guesses.check(policy, printed_code(printed[-1]), OWNER),
                                     per_second=1.0, hours=2.0)
    assert max(len([u for u in heard if t - 3600 <= u <= t]) for t in heard) == guesses.ceiling == 100
    assert len(owner) == 118 and all(result == (True, True, 0.0) for result in owner)  # each use prints the next code
    refused = guesses.check(policy, "s3cret", OWNER)
    assert not refused.heard and 0 < refused.wait <= 3600  # past the ceiling the password waits; the code does not


def test_addresses_are_kept_per_ipv4_address_and_ipv6_64_and_their_number_is_bounded():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1" and client_key("[::1]") == "::/64"
    assert client_key(None) == "local" and client_key("not an address") == "not an address"
    policy, clock = Access(password="s3cret"), Clock()
    guesses = PasswordGuesses(first=1000, clock=clock, addresses=50, ceiling=1000)
    for i in range(200):
        assert guesses.check(policy, "wrong", f"10.0.{i // 250}.{i % 250}").heard
        clock.now += 1
    assert len(guesses.failures) == 50  # the oldest are forgotten first
    assert guesses.check(policy, "wrong", "10.0.0.199").heard is False  # a recent one is still held back


def test_forty_sessions_guessing_at_once_get_at_most_one_guess_a_second():
    import threading

    policy, clock = Access(password="s3cret"), Clock()
    guesses, heard = PasswordGuesses(clock=clock), []
    start = clock.now
    for tick in range(8):  # 40 sessions guess at the same instant, every half second for 3.5 s
        clock.now = start + tick / 2
        barrier = threading.Barrier(40)

        def session():
            barrier.wait()
            if guesses.check(policy, "wrong").heard:
                heard.append(clock.now - start)

        threads = [threading.Thread(target=session) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert heard == [0.0, 1.0, 3.0]  # one guess heard at 0, 1 and 3 s (the wait doubles), never two at once


def test_exposed_without_a_password_nothing_can_be_changed(model_settings, exposed):
    at = open_page(model_settings, "pages/train.py")
    assert "Start training" not in labels(at) and "Make active" not in labels(at)
    assert any("without a password" in e.value for e in at.info)
    at.switch_page("pages/label.py").run()
    assert not at.text_input and not at.exception  # no name field, no way to rename
    assert str(model_settings.images) not in " ".join(e.value for e in at.sidebar.text)  # no server paths


def test_readonly_mode_offers_search_and_explore_only(model_settings, monkeypatch):
    monkeypatch.setenv("IMGSIM_READONLY", "1")
    at = open_page(model_settings, "pages/label.py")
    assert not at.text_input and not [b for b in at.sidebar.button if b.key == "sidebar-retrain"]
    assert any("read-only" in e.value for e in at.caption)
    names_before = load_names(model_settings.model_dir, store.current_id(model_settings.model_dir))
    at.switch_page("pages/search.py").run()
    assert at.file_uploader and not at.exception
    assert load_names(model_settings.model_dir, store.current_id(model_settings.model_dir)) == names_before


def test_readonly_first_visit_offers_no_training(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSIM_READONLY", "1")
    at = open_page(Settings(model_dir=tmp_path / "models", images=tmp_path / "photos"))
    assert not at.button and any("read-only" in e.value for e in at.info)
    assert not (tmp_path / "models").exists()


@pytest.fixture
def downloads(monkeypatch):
    """What each download button a page draws would give its visitor, by file name (deferred ones generated as a click would)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    files = {}
    real_add, real_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def add(self, data, mimetype, coordinates, file_name=None, *args, **kwargs):
        files[file_name] = lambda: data
        return real_add(self, data, mimetype, coordinates, file_name, *args, **kwargs)

    def add_deferred(self, make, mimetype, coordinates, file_name=None, **kwargs):
        files[file_name] = make
        return real_deferred(self, make, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)

    def download(name: str) -> str:
        data = files[name]()
        return data.decode() if isinstance(data, bytes) else data

    return download


def test_a_visitor_sees_collection_relative_paths_only(model_settings, tiny_collection, tmp_path, monkeypatch, downloads):
    """The results and duplicates CSVs, and the errors on Search, name files relative to the collection (the CLI keeps them whole)."""
    import csv
    import io
    import shutil

    import imgsim.search
    from imgsim.runs.indexing import index

    photos = shutil.copytree(tiny_collection, tmp_path / "photos")
    query = min(photos.rglob("*.jpg"))
    shutil.copy(query, photos / "copy-of-it.jpg")
    settings = model_settings.replace(images=photos)
    index(settings)
    scan_and_save(store.load_version(settings.model_dir))  # the background job's scan, before a file went
    gone = max(photos.rglob("*.jpg"))
    gone.unlink()
    server_paths = {form(path) for path in (tmp_path, tmp_path.resolve()) for form in (str, markdown_text)}
    monkeypatch.setenv("IMGSIM_READONLY", "1")

    at = open_page(settings)
    at.file_uploader(key="upload").set_value((query.name, query.read_bytes(), "image/jpeg")).run()
    results = list(csv.DictReader(io.StringIO(downloads("imgsim-results.csv"))))
    assert len(results) == 8 and {r["path"] for r in results} >= {"copy-of-it.jpg", str(query.relative_to(photos))}
    at.segmented_control(key="how").set_value("Collection").run()
    at.selectbox(key="pick").select(str(gone)).run()
    assert [e.value for e in at.error] == [markdown_text(f"{gone.relative_to(photos)}: no such file")]
    version_id = store.current_id(settings.model_dir)

    def damaged(model_dir, version_id):
        raise OSError(f"cannot read {model_dir}/versions/{version_id}/model.keras")

    monkeypatch.setattr(imgsim.search, "shared", damaged)
    at.selectbox(key="pick").select(str(query)).run()
    [error] = at.error
    assert f"loaded ({markdown_text(f'OSError: cannot read versions/{version_id}/model.keras')})" in error.value
    shown = " ".join(e.value for e in at.error)

    at.switch_page("pages/duplicates.py").run()
    assert not at.exception
    duplicates = list(csv.DictReader(io.StringIO(downloads(f"imgsim-duplicates-{version_id}.csv"))))
    assert {r["path"] for r in duplicates} == {"copy-of-it.jpg", str(query.relative_to(photos))}
    for text in (str(results), shown, str(duplicates)):
        assert not any(path in text for path in server_paths), text


def test_a_damaged_model_is_reported_to_a_visitor_without_server_paths(model_settings, monkeypatch):
    version_id = store.current_id(model_settings.model_dir)
    (model_settings.model_dir / "versions" / version_id / "centres.npy").write_bytes(b"damaged")
    monkeypatch.setenv("IMGSIM_READONLY", "1")
    at = open_page(model_settings)
    for page in ("pages/search.py", "pages/duplicates.py"):
        if page != "pages/search.py":
            at.switch_page(page).run()
        [error] = at.error
        assert error.value == "The active model cannot be used: " + markdown_text(
            f"versions/{version_id}: centres.npy is missing or damaged"), page


@pytest.mark.parametrize("typed", ["/etc/passwd", "/root", "/nonexistent/x.png", "../outside/secret.png",
                                   "file:///etc/passwd", "SECRET_PATH"])
def test_the_url_field_never_reads_a_server_file(model_settings, tmp_path, typed):
    from PIL import Image

    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (40, 40), "red").save(secret)
    typed = str(secret) if typed == "SECRET_PATH" else typed
    at = open_page(model_settings)
    at.segmented_control(key="how").set_value("URL").run()
    at.text_input(key="url").input(typed).run()
    assert [e.value for e in at.error] == [
        "Enter the http:// or https:// address of an image. To search with a file, upload it."]
    assert len(at.image) == 0 and not at.exception  # nothing shown, and the same words whatever exists


def test_the_url_field_says_only_not_allowed_whatever_an_internal_name_resolves_to(model_settings, monkeypatch):
    """It said "vm resolves to 127.0.0.1, a loopback address": how the server's DNS sees internal names."""
    import socket

    from imgsim.core.errors import UrlError
    from imgsim.inputs.fetch import fetch_url

    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # the server's own DNS: one internal name, one that does not exist
        if host == "vm.internal.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
        if host == "nothing.internal.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(UrlError) as caught:
        fetch_url("http://vm.internal.test/x.png")
    assert "resolves to 127.0.0.1, a loopback address" in caught.value.detail  # what the old field showed
    at = open_page(model_settings)
    at.segmented_control(key="how").set_value("URL").run()
    shown = []
    for url in ("http://vm.internal.test/x.png", "http://nothing.internal.test/x.png"):
        at.text_input(key="url").input(url).run()
        [error] = at.error
        shown.append(error.value.replace(markdown_text(url + ": "), "URL: "))
    assert shown == ["URL: not allowed", "URL: not allowed"]  # the same words: nothing about either name


def test_group_names_are_shown_as_text_never_markup(model_settings):
    from imgsim.storage.group_names import save_names

    version_id = store.current_id(model_settings.model_dir)
    tracker = "![x](http://127.0.0.1:9/track.png) **bold** :red[red] $x$"
    save_names(model_settings.model_dir, version_id, {0: tracker})
    at = open_page(model_settings, "pages/explore.py")
    [control] = at.get("button_group")
    shown = control.proto.options[0].content
    assert shown.startswith("group 0 · \\!\\[x\\]\\(http\\:") and "![x](" not in shown
    assert "\\*\\*bold\\*\\*" in shown and "\\:red\\[red\\]" in shown and "\\$x\\$" in shown
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert tracker in {t["name"].removeprefix("group 0 · ") for t in traces}  # Plotly reads no Markdown ...


def test_names_with_html_reach_plotly_escaped(model_settings):
    from imgsim.storage.group_names import save_names

    save_names(model_settings.model_dir, store.current_id(model_settings.model_dir),
               {1: '<a href="http://127.0.0.1:9/x">click</a><img src=x>'})
    at = open_page(model_settings, "pages/explore.py")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)  # ... but it reads some HTML, so that is escaped
    names = {t["name"] for t in figure["data"]}
    assert 'group 1 · &lt;a href="http://127.0.0.1:9/x"&gt;click&lt;/a&gt;&lt;img src=x&gt;' in names  # quotes as typed
    assert "<a href" not in json.dumps(figure) and "<img" not in json.dumps(figure)


def test_error_messages_holding_names_are_text_never_markup(model_settings, tmp_path):
    """An upload named like Markdown that fails to decode: the error shows the name as typed."""
    at = open_page(model_settings)
    name = "![x](http://127.0.0.1:9/t.png)**b**.png"
    at.file_uploader(key="upload").set_value((name, b"not pixels", "image/png")).run()
    [error] = at.error
    assert "\\!\\[x\\]\\(http\\:" in error.value and "![x](" not in error.value


FOREIGN = "rebind.attacker.example"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The dashboard as run.sh serves it (no model: it starts in seconds), with one public name added; yields its port."""
    folder = tmp_path_factory.mktemp("served")
    env = {"IMGSIM_MODEL_DIR": str(folder / "models"), "IMGSIM_IMAGES": str(folder / "photos"),
           "IMGSIM_ALLOWED_HOSTS": "photos.example.org"}
    with running_dashboard(folder / "streamlit.log", env) as (_, port):
        yield port


def open_stream(port: int, host: str):
    """The dashboard's WebSocket as a browser at http://host:port opens it (that Host and Origin), through 127.0.0.1."""
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return connect(f"ws://{host}:{port}/_stcore/stream", sock=sock, origin=f"http://{host}:{port}",
                   subprotocols=["streamlit"], open_timeout=10)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "photos.example.org"])
def test_the_dashboard_answers_its_own_names(served, host):
    with open_stream(served, host) as stream:
        assert stream.subprotocol == "streamlit"


@pytest.mark.parametrize("host", [FOREIGN, "127.0.0.1.nip.io", "localhost.attacker.example"])
def test_a_page_whose_name_was_rebound_to_this_machine_cannot_open_the_dashboard(served, host):
    """DNS rebinding: the browser sends the attacker's name as Host and Origin; the socket every change goes through is refused."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        open_stream(served, host).close()
    assert refused.value.response.status_code == 403


def test_the_metrics_endpoint_tells_a_stranger_nothing(served):
    """/_stcore/metrics answers any Host name; it showed open sessions, upload sizes and query counts."""
    import urllib.request

    with open_stream(served, "127.0.0.1"):  # a session open meanwhile
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for host in (FOREIGN, "127.0.0.1"):
            request = urllib.request.Request(f"http://127.0.0.1:{served}/_stcore/metrics", headers={"Host": host})
            body = opener.open(request, timeout=10).read().decode()
            assert [line for line in body.splitlines() if line and not line.startswith("#")] == [], body


def test_the_allowed_names_are_this_machine_s_plus_the_shared_ones():
    assert allowed_hosts("127.0.0.1", environ={}) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("0.0.0.0", environ={}) == ["localhost", "127.0.0.1", "::1"]  # exposed: names must be given
    assert allowed_hosts("192.168.1.20", environ={"IMGSIM_ALLOWED_HOSTS": "Photos.example.org, [fd00::5] *.lan"}) == [
        "localhost", "127.0.0.1", "::1", "192.168.1.20", "photos.example.org", "fd00::5", "*.lan"]


def test_serve_passes_every_option_itself_whatever_config_is_found(monkeypatch, capsys, tmp_path):
    """`imgsim serve` started in a folder with its own .streamlit/config.toml still binds and filters as shipped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text('[server]\naddress = "0.0.0.0"\n[client]\nshowErrorDetails = "full"\n')
    flags = streamlit_flags(environ={})
    assert "--server.address=127.0.0.1" in flags and "--client.showErrorDetails=none" in flags
    assert [f for f in flags if f.startswith("--server.allowedHosts=")] == [
        "--server.allowedHosts=localhost", "--server.allowedHosts=127.0.0.1", "--server.allowedHosts=::1"]
    exposed = streamlit_flags("0.0.0.0", 8600, environ={"IMGSIM_ALLOWED_HOSTS": "photos.example.org"})
    assert "--server.address=0.0.0.0" in exposed and "--server.port=8600" in exposed
    assert "--server.allowedHosts=photos.example.org" in exposed
    assert "IMGSIM_ALLOWED_HOSTS" in exposure_warning("0.0.0.0", environ={}) and exposure_warning("127.0.0.1") is None


def test_a_visitor_never_sees_a_traceback_or_an_error_s_text():
    at = AppTest.from_string("raise RuntimeError('/srv/photos/private/holiday.jpg cannot be read')").run()
    shown = at.exception[0]
    assert not shown.stack_trace and "/srv/photos" not in shown.message


def test_a_hostile_training_status_renders_as_text_and_crashes_no_page(tmp_path):
    """training.json is data: a Markdown link and image in its message stay text, wrong types never crash a page."""
    import subprocess
    import sys

    model_dir = tmp_path / "models"
    model_dir.mkdir()
    settings = Settings(model_dir=model_dir, images=tmp_path / "photos")
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "imgsim.runs.jobs"], start_new_session=True)
    while not jobs.pid_alive(run.pid):  # a run's own process, as far as any check can tell, once it has exec'd
        time.sleep(0.01)
    try:
        hostile = "[click](http://127.0.0.1:9/x) ![img](http://127.0.0.1:9/t.png) **bold**"
        jobs.write_status(model_dir, {"state": "running", "pid": run.pid, "pid_start": jobs.process_start(run.pid),
                                      "started": "yesterday", "fraction": "most", "message": hostile,
                                      "curve": [["a", 1], [0.5]]})
        at = open_page(settings, "pages/train.py")
        bars = at.get("progress")  # the sidebar's and the Train page's
        assert len(bars) == 2 and not at.exception
        for bar in bars:
            assert bar.proto.text == markdown_text(hostile) and "](http" not in bar.proto.text
            assert bar.proto.value == 0
        jobs.write_status(model_dir, {"state": "failed", "error": ["a", "list"], "stopped": "no", "started": None})
        at.run()
        assert not at.exception and not at.get("progress")
    finally:
        run.kill()
        run.wait()


def test_large_urls_leave_the_server_holding_their_decoded_input_only(model_settings, http_server, monkeypatch):
    """The probe's URLs of 20 MB that were not images grew the server by their bytes for 10 minutes; now a URL's
    image is kept as the model's input and a thumbnail (imgsim.search.url_queries), within a byte budget."""
    import io

    import numpy as np
    from PIL import Image
    from streamlit.runtime.caching.cache_data_api import _data_caches

    import imgsim.search
    from imgsim.core.cache import ByteBudgetCache

    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setattr(imgsim.search, "url_queries", ByteBudgetCache(imgsim.search.URL_QUERY_BYTES, 600))

    def held() -> int:  # every st.cache_data entry's bytes, and the URL queries'
        stats = [stat for family in _data_caches.get_stats().values() for stat in family]
        return sum(stat.byte_length for stat in stats) + imgsim.search.url_queries.nbytes

    rng = np.random.default_rng(1)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), np.uint8)).save(out, "JPEG", quality=95)
    photo = http_server.serve("/held/photo.jpg", out.getvalue(), content_type="image/jpeg")
    at = open_page(model_settings)
    at.segmented_control(key="how").set_value("URL").run()
    before = held()
    for i in range(4):
        junk = http_server.serve(f"/held/junk-{i}.jpg", rng.bytes(4_000_000), content_type="image/jpeg")
        at.text_input(key="url").input(junk).run()
        assert at.error and "not an image" in at.error[0].value and not at.exception
    at.text_input(key="url").input(photo).run()
    assert not at.error and len(at.image) == 1 + 8
    assert held() - before < 200_000, held() - before  # 16 MB of junk and a 3 MB photo: was all of it


@pytest.mark.parametrize("host,port,why", [("127.0.0.1", 70000, "between 1 and 65535"),
                                           ("no-such-host.invalid", 8600, "cannot listen on no-such-host.invalid"),
                                           ("192.0.2.1", 8600, "cannot listen on 192.0.2.1:8600")])
def test_serve_refuses_an_address_it_cannot_listen_on_in_one_line(host, port, why, tmp_path, capsys):
    from imgsim.cli import main

    assert main(["serve", "--model-dir", str(tmp_path / "models"), "--host", host, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()  # no training was started for a server that cannot start


def test_serve_refuses_a_port_in_use(tmp_path, capsys):
    from imgsim.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model-dir", str(tmp_path / "models"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_stopping_imgsim_serve_stops_its_dashboard_server(tmp_path):
    """SIGTERM to `imgsim serve` (what running_dashboard and a service manager send) leaves no server behind."""
    env = {"IMGSIM_MODEL_DIR": str(tmp_path / "models"), "IMGSIM_IMAGES": str(tmp_path / "photos")}

    def servers_on(port: int) -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and f"--server.port={port}".encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
        return found

    with running_dashboard(tmp_path / "streamlit.log", env) as (_, port):
        assert servers_on(port)  # the dashboard's own process, started by `imgsim serve`
    deadline = time.monotonic() + 20
    while servers_on(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not servers_on(port)
