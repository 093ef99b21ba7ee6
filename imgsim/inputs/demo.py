"""Image collections built from real photographs and data sets that ship inside installed packages.

Nothing is downloaded: the photographs are the files in scikit-image's `skimage/data` folder and
scikit-learn's two sample images. Every collection has one sub-folder per label, so the demo
collection doubles as a labelled evaluation set, and each is built in a hidden sibling folder
that is renamed into place with its `.complete` marker inside: a killed build leaves no
collection that looks complete.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance

from imgsim.inputs.images import to_rgb

MARKER = ".complete"

# Real photographs (and scans, micrographs, a telescope image) in skimage/data, by the name of the
# skimage.data function that loads each. Left out: synthetic test patterns (chessboard, phantom,
# logo, color, horse's silhouette), motorcycle_right (the stereo twin of motorcycle_left, which
# would make two labels that no method can tell apart) and the 14x25 px animated GIF.
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "clock_motion": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "microaneurysms": "microaneurysms.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}

Progress = Callable[[float, str], None]


def skimage_data_dir() -> Path | None:
    """scikit-image's data folder, found without importing the package."""
    spec = importlib.util.find_spec("skimage")
    return Path(spec.origin).parent / "data" if spec and spec.origin else None


def source_photos() -> dict[str, Image.Image]:
    """The shipped photographs as RGB images, by name, in name order; files that are absent are skipped."""
    photos = {}
    folder = skimage_data_dir()
    if folder is not None:
        for name, filename in SKIMAGE_PHOTOS.items():
            path = folder / filename
            if path.is_file():
                with Image.open(path) as img:
                    img.load()
                    photos[name] = to_rgb(img)
    try:
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()
        for filename, array in zip(samples.filenames, samples.images):
            photos[Path(filename).stem] = Image.fromarray(array).convert("RGB")
    except ImportError:
        pass
    if len(photos) < 2:
        raise RuntimeError("fewer than two sample photographs found in scikit-image and scikit-learn")
    return dict(sorted(photos.items()))


def augment(photo: Image.Image, rng: np.random.Generator, size: int, area=(0.45, 0.90), grey: float = 0.0,
            colour: float = 0.0) -> Image.Image:
    """A random view of a photo: crop of 45-90% of its area, flip, +-10 degree turn, light, contrast.

    Harder views for evaluation: `area` sets the crop's range, `grey` the chance of a greyscale
    view, `colour` the strength of a colour shift (saturation x (1 +- colour), each channel
    x (1 +- colour / 2)). The defaults draw exactly what the demo collection always drew.

    Crop, flip, rotation and resize are one affine resample, and the turned crop is kept inside
    the photo, so no corner is ever filled with a border colour.
    """
    width, height = photo.size
    crop_w, crop_h = _crop_size(width, height, rng, area)
    angle = math.radians(rng.uniform(-10, 10))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    cos, sin = math.cos(angle), math.sin(angle)
    box_w = crop_w * abs(cos) + crop_h * abs(sin)
    box_h = crop_w * abs(sin) + crop_h * abs(cos)
    fit = min(1.0, width / box_w, height / box_h)  # shrink the crop until the turned box fits
    crop_w, crop_h, box_w, box_h = crop_w * fit, crop_h * fit, box_w * fit, box_h * fit
    centre_x = box_w / 2 + rng.random() * max(0.0, width - box_w)
    centre_y = box_h / 2 + rng.random() * max(0.0, height - box_h)

    # An affine resample does not average over the pixels it skips: shrink big photos first.
    reduce = int(min(crop_w, crop_h) / size)
    if reduce >= 2:
        photo = photo.reduce(reduce)
        crop_w, crop_h, centre_x, centre_y = (v / reduce for v in (crop_w, crop_h, centre_x, centre_y))
    step_x, step_y = flip * crop_w / size, crop_h / size
    a, b, d, e = cos * step_x, -sin * step_y, sin * step_x, cos * step_y
    half = size / 2
    matrix = (a, b, centre_x - (a + b) * half, d, e, centre_y - (d + e) * half)
    view = photo.transform((size, size), Image.Transform.AFFINE, matrix, Image.Resampling.BICUBIC)

    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.75, 1.25))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.75, 1.25))
    if colour > 0:
        view = ImageEnhance.Color(view).enhance(rng.uniform(1 - colour, 1 + colour))
        gains = rng.uniform(1 - colour / 2, 1 + colour / 2, 3)
        view = Image.fromarray(np.clip(np.asarray(view, np.float32) * gains, 0, 255).astype(np.uint8))
    if grey > 0 and rng.random() < grey:
        view = view.convert("L").convert("RGB")
    return view


def _crop_size(width: int, height: int, rng: np.random.Generator, area=(0.45, 0.90)) -> tuple[float, float]:
    """Width and height of a crop with a share of the area in `area` and aspect 3/4..4/3 (log-uniform)."""
    low, high = area
    for _ in range(10):
        area = width * height * rng.uniform(low, high)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w, crop_h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        if crop_w <= width and crop_h <= height:
            return crop_w, crop_h
    return min(crop_w, width), min(crop_h, height)  # a very long photo: clip to its short side


def build_demo(out_dir, n: int = 600, size: int = 512, seed: int = 0, progress: Progress | None = None) -> Path:
    """Write n augmented JPEGs spread evenly over the source photos, as `<photo>/<photo>_0007.jpg`.

    The same n, size and seed give the same files; a folder that already holds that collection
    is left as it is.
    """
    if n < 1 or size < 1:
        raise ValueError(f"need at least one image of at least one pixel, got n={n}, size={size}")
    photos = source_photos()
    spec = {"kind": "demo", "n": n, "size": size, "seed": seed, "sources": list(photos)}

    def write(folder: Path) -> None:
        per_photo, extra = divmod(n, len(photos))
        jobs = []
        for rank, name in enumerate(photos):
            (folder / name).mkdir()
            for number in range(per_photo + (rank < extra)):
                jobs.append((name, folder / name / f"{name}_{number:04d}.jpg"))

        def render(index: int) -> None:
            name, path = jobs[index]
            rng = np.random.default_rng([seed, index])  # one stream per image: threads cannot reorder draws
            quality = int(rng.integers(60, 96))
            augment(photos[name], rng, size).save(path, "JPEG", quality=quality)

        _run_threaded(render, len(jobs), progress, "images")

    return _build_once(Path(out_dir), spec, write, progress)


# Icon artwork, unlike any photograph: the Adwaita theme's 512 px device icons (Debian's adwaita-icon-theme,
# installed with GTK). Drawn objects on a flat background, often alike in palette (the printers, the drives).
ICON_FOLDER = Path("/usr/share/icons/Adwaita/512x512/devices")


def source_icons(folder: Path = ICON_FOLDER) -> dict[str, Image.Image]:
    """The icons in `folder` as RGB images on imgsim's background, by name; FileNotFoundError when there are none."""
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if len(files) < 2:
        raise FileNotFoundError(f"{folder}: no icons here (Debian's adwaita-icon-theme is not installed)")
    icons = {}
    for path in files:
        with Image.open(path) as img:
            img.load()
            icons[path.stem] = to_rgb(img)
    return icons


def halves(photos: dict[str, Image.Image]) -> dict[str, Image.Image]:
    """Each photo's two halves (left and right, or top and bottom along its long side) as sources of their own.

    Twice the labels, and pairs that share a palette, lighting and texture: a harder collection.
    """
    out = {}
    for name, photo in photos.items():
        w, h = photo.size
        boxes = [(0, 0, w // 2, h), (w // 2, 0, w, h)] if w >= h else [(0, 0, w, h // 2), (0, h // 2, w, h)]
        for tag, box in zip("ab", boxes):
            out[f"{name}-{tag}"] = photo.crop(box)
    return out


def build_views(out_dir, per_source: int, size: int = 256, seed: int = 1, area=(0.30, 0.80), grey: float = 0.25,
                colour: float = 0.5, split: bool = False, progress: Progress | None = None,
                sources: dict[str, Image.Image] | None = None) -> Path:
    """An evaluation collection of `per_source` views of each shipped photograph (or of each half, `split`).

    Heavier than the demo by default: crops of 30-80% of the area, a quarter of the views in
    greyscale, strong colour shifts; JPEG quality 60-95 as the demo. `sources` replaces the photographs.
    """
    photos = source_photos() if sources is None else sources
    if split:
        photos = halves(photos)
    spec = {"kind": "views", "per_source": per_source, "size": size, "seed": seed, "area": list(area), "grey": grey,
            "colour": colour, "split": split, "sources": list(photos)}

    def write(folder: Path) -> None:
        jobs = []
        for name in photos:
            (folder / name).mkdir()
            jobs += [(name, folder / name / f"{name}_{number:04d}.jpg") for number in range(per_source)]

        def render(index: int) -> None:
            name, path = jobs[index]
            rng = np.random.default_rng([seed, index])
            quality = int(rng.integers(60, 96))
            augment(photos[name], rng, size, area=area, grey=grey, colour=colour).save(path, "JPEG", quality=quality)

        _run_threaded(render, len(jobs), progress, "images")

    return _build_once(Path(out_dir), spec, write, progress)


def build_digits(out_dir, size: int = 64, progress: Progress | None = None) -> Path:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as PNGs, `<digit>/<digit>_0042.png`.

    Upscaled with nearest neighbour, so each original pixel stays one flat square; the number in
    a file name is the digit's row in `load_digits()`.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    spec = {"kind": "digits", "size": size, "count": len(digits.target)}

    def write(folder: Path) -> None:
        for label in range(10):
            (folder / str(label)).mkdir()
        grey = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # ink 16 -> white

        def save(index: int) -> None:
            label = digits.target[index]
            img = Image.fromarray(grey[index]).resize((size, size), Image.Resampling.NEAREST)
            img.save(folder / str(label) / f"{label}_{index:04d}.png")

        _run_threaded(save, len(grey), progress, "digits")

    return _build_once(Path(out_dir), spec, write, progress)


def build_faces(out_dir, progress: Progress | None = None) -> Path:
    """scikit-image's LFW subset: 100 faces and 100 non-faces (25x25 grey) as PNGs in `face/`, `nonface/`."""
    folder = skimage_data_dir()
    path = folder / "lfw_subset.npy" if folder else None
    if path is None or not path.is_file():
        raise FileNotFoundError("scikit-image's lfw_subset.npy is not installed here")
    images = np.load(path)  # (200, 25, 25) floats in [0, 1]: the first 100 are faces (skimage.data.lfw_subset)
    if images.shape[0] != 200:
        raise ValueError(f"{path}: expected 200 images, found {images.shape[0]}")
    spec = {"kind": "faces", "count": 200}

    def write(out: Path) -> None:
        for label in ("face", "nonface"):
            (out / label).mkdir()
        for index, image in enumerate(images):
            label = "face" if index < 100 else "nonface"
            grey = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            Image.fromarray(grey).save(out / label / f"{label}_{index % 100:03d}.png")

    return _build_once(Path(out_dir), spec, write, progress)


def _run_threaded(task: Callable[[int], None], count: int, progress: Progress | None, noun: str) -> None:
    """Run task(0..count-1) on a thread per core; Pillow's resample, encode and decode release the GIL."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [pool.submit(task, index) for index in range(count)]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if progress is not None and (done % 20 == 0 or done == count):
                progress(done / count, f"{done}/{count} {noun}")


def is_complete(out_dir, spec: dict) -> bool:
    """Whether out_dir holds a finished collection built with exactly this spec."""
    try:
        return json.loads((Path(out_dir) / MARKER).read_text()) == spec
    except (OSError, ValueError):
        return False


def _build_once(out_dir: Path, spec: dict, write: Callable[[Path], None], progress: Progress | None) -> Path:
    """Build a collection in a hidden sibling folder and rename it into place, unless it is there already."""
    if is_complete(out_dir, spec):
        if progress is not None:
            progress(1.0, f"{out_dir} is already built")
        return out_dir
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise ValueError(f"{out_dir}: folder holds files that imgsim did not write; choose a new or empty folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file, not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    old = work.with_suffix(".old")
    try:
        write(work)
        (work / MARKER).write_text(json.dumps(spec))  # last: only a finished folder carries it
        work.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():  # empty, or a collection built with other settings: replace it
            out_dir.rename(old)
        try:
            work.rename(out_dir)
        except OSError:
            if not is_complete(out_dir, spec):  # another process finished the same build first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
