"""Display thumbnails kept per version on disk (imgsim.inputs.thumbnails), and the pages drawing from them.

A "new process" here is a fresh memory cache (thumbnails.MEMORY replaced): what a restarted server,
or a second one over the same model folder, starts with.
"""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgsim import Settings
from imgsim.core.cache import ByteBudgetCache
from imgsim.inputs import thumbnails
from imgsim.inputs.thumbnails import ThumbnailFolder
from imgsim.storage.folder import ModelFolder
from tests.helpers import vector_version

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def made(monkeypatch) -> list:
    """Every source decoded into a thumbnail (the expensive part), as (path, px); and a fresh memory cache."""
    calls = []
    real = thumbnails.thumbnail_webp
    monkeypatch.setattr(thumbnails, "thumbnail_webp", lambda source, px=192, root=None: calls.append((str(source), px))
                        or real(source, px, root))
    new_process(monkeypatch)
    return calls


def new_process(monkeypatch) -> None:
    monkeypatch.setattr(thumbnails, "MEMORY", ByteBudgetCache(1 << 20, ttl=3600, size=len))


def photo(path: Path, colour=(200, 40, 40), size=(300, 200), kind: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, kind)
    return path


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_a_thumbnail_is_made_once_and_read_back_by_a_new_process(tmp_path, made, monkeypatch):
    source = photo(tmp_path / "photos" / "a.jpg")
    folder = ThumbnailFolder(tmp_path / "thumbs")
    first = folder.webp(7, source, 128)
    assert decoded(first).size == (128, 85) and made == [(str(source), 128)]
    assert folder.webp(7, source, 128) == first and len(made) == 1  # memory
    kept = folder.path(7, 128)
    assert kept.read_bytes() == first and kept.stat().st_mtime_ns == source.stat().st_mtime_ns
    new_process(monkeypatch)
    assert folder.webp(7, source, 128) == first and len(made) == 1  # disk: the source is not decoded again
    assert decoded(folder.webp(7, source, 64)).size == (64, 43) and len(made) == 2  # each size its own


@pytest.mark.parametrize("damage", ["cut short", "overwritten", "a link", "a PNG", "a JPEG", "too large"])
def test_a_damaged_thumbnail_is_made_again(tmp_path, made, monkeypatch, damage):
    source = photo(tmp_path / "photos" / "a.jpg")
    other = photo(tmp_path / "elsewhere" / "b.webp", colour=(0, 0, 255), size=(64, 64), kind="WEBP")
    folder = ThumbnailFolder(tmp_path / "thumbs")
    good = folder.webp(1, source, 64)
    kept, stamp = folder.path(1, 64), source.stat().st_mtime_ns
    if damage == "cut short":
        kept.write_bytes(good[: len(good) // 2])
    elif damage == "overwritten":
        kept.write_bytes(good[:12] + os.urandom(len(good)))  # a WebP's header, then noise
    elif damage == "a link":  # to a WebP that would pass every other check
        kept.unlink()
        kept.symlink_to(other)
        os.utime(other, ns=(stamp, stamp))
    elif damage in ("a PNG", "a JPEG"):  # the size allowed, the wrong format
        buffer = io.BytesIO()
        Image.new("RGB", (64, 43)).save(buffer, damage.split()[1])
        kept.write_bytes(buffer.getvalue())
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (300, 200)).save(buffer, "WEBP")
        kept.write_bytes(buffer.getvalue())
    if damage != "a link":
        os.utime(kept, ns=(stamp, stamp))  # the time says "made from this source": only the content is wrong
    new_process(monkeypatch)
    assert folder.webp(1, source, 64) == good and len(made) == 2  # made again, not read
    assert not kept.is_symlink() and kept.read_bytes() == good  # and kept whole
    assert other.read_bytes() != good  # the link's target was replaced, not written through


def test_an_edited_source_gets_a_new_thumbnail(tmp_path, made, monkeypatch):
    source = photo(tmp_path / "photos" / "a.jpg")
    folder = ThumbnailFolder(tmp_path / "thumbs")
    red = decoded(folder.webp(3, source, 32)).getpixel((5, 5))
    photo(source, colour=(30, 200, 30))
    os.utime(source, ns=(source.stat().st_mtime_ns + 10**9,) * 2)  # a new time, however coarse the clock
    green = decoded(folder.webp(3, source, 32)).getpixel((5, 5))
    assert red[0] > 150 and green[1] > 150 and len(made) == 2


def test_an_unreadable_source_shows_the_placeholder_and_keeps_nothing(tmp_path, made):
    broken = tmp_path / "photos" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    folder = ThumbnailFolder(tmp_path / "thumbs")
    for source in (broken, tmp_path / "photos" / "gone.jpg"):
        assert folder.webp(5, source, 48) == thumbnails.placeholder_webp(48)
    assert not (tmp_path / "thumbs").exists()


def test_a_model_folder_that_cannot_be_written_still_shows_thumbnails(tmp_path, made):
    source = photo(tmp_path / "photos" / "a.jpg")
    (tmp_path / "thumbs").write_bytes(b"a file where the folder would be")
    assert decoded(ThumbnailFolder(tmp_path / "thumbs").webp(1, source, 32)).size == (32, 21)


# --- the pages -------------------------------------------------------------------------------------

@pytest.fixture
def collection(tmp_path) -> tuple[Settings, object]:
    """A version over 40 real JPEGs (synthetic vectors: no model, no TensorFlow)."""
    from pages import common

    photos = tmp_path / "photos"
    version, _ = vector_version(tmp_path / "models", 40, 4, folder=str(photos))
    rng = np.random.default_rng(0)
    for path in version.paths:
        photo(Path(path), colour=tuple(int(c) for c in rng.integers(0, 255, 3)), size=(160, 120))
    common._preloaded.add((str(tmp_path / "models"), version.id))  # nothing here searches: no model load
    return Settings(model_dir=tmp_path / "models", images=photos), version


def explore(settings: Settings) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=60)
    at.session_state["settings"] = settings
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_second_visitor_s_page_makes_no_thumbnail_and_gets_them_inline(collection, made, monkeypatch):
    settings, version = collection
    first = explore(settings)
    shown = [image.url for image in first.image[0].proto.imgs]  # group 0's gallery
    assert len(shown) == int((version.groups == 0).sum()) and len(made) == len(shown)
    assert all(url.startswith("data:image/webp;base64,") for url in shown)  # no media file to request
    folder = ModelFolder(settings.model_dir).thumbnail_folder(version.id)
    assert len(list((folder / "128").glob("*.webp"))) == len(shown)

    second = explore(settings)  # another browser session, same server
    assert [image.url for image in second.image[0].proto.imgs] == shown and len(made) == len(shown)
    new_process(monkeypatch)  # the server restarted: the thumbnails come from the version's folder
    third = explore(settings)
    assert [image.url for image in third.image[0].proto.imgs] == shown and len(made) == len(shown)


def test_a_source_swapped_for_a_link_out_of_the_collection_shows_the_placeholder(tmp_path, made):
    photos = tmp_path / "photos"
    private = photo(tmp_path / "private" / "secret.jpg", colour=(0, 200, 0))
    swapped = photos / "a.jpg"
    photo(photos / "b.jpg")
    swapped.symlink_to(private)  # planted after indexing, in place of a collection image
    folder = ThumbnailFolder(tmp_path / "thumbs")
    assert folder.webp(1, swapped, 64) != thumbnails.placeholder_webp(64)  # without the root: the private picture
    guarded = ThumbnailFolder(tmp_path / "thumbs-guarded")
    assert guarded.webp(1, swapped, 64, root=photos) == thumbnails.placeholder_webp(64)
    assert not guarded.path(1, 64).exists()  # nothing kept for it
    assert decoded(guarded.webp(2, photos / "b.jpg", 64, root=photos)).size == (64, 43)  # the collection's own
