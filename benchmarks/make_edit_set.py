"""A near-duplicate set with the edits sharing and editing make, built only from the shipped photographs.

    .venv/bin/python benchmarks/make_edit_set.py OUT_FOLDER [--seed 1]

Per photograph (scikit-image's photographs and scikit-learn's two sample images, imgsim.inputs.demo.
source_photos; nothing downloaded), one folder holding:

- `original.png`: a region of the photograph (60 % of its width, 85 % of its height), 320 px;
- `exact.png`: the same bytes under another name;
- one near copy per edit kind, named `<kind>.<ext>` (KINDS below): a border or letterbox, a
  caption bar, a watermark, a 10-25 % crop, a turn of 2-5 degrees (straightened: the empty corners
  cut off), colour grading or a filter, a "screenshot" (rescaled 60-150 % and pasted into a window
  frame), and two of those edits together; each saved as JPEG (quality 70-95) or PNG;
- hard negatives, which are not copies: `burst.png`, the same scene shifted by 30-40 % of the
  width and 0-10 % of the height (a burst shot: 60-70 % of it overlaps the original), and
  `other-crop.png`, another region of the photograph (under a third of it overlaps the original).

The family of a file is its folder; duplicate pairs are pairs in one folder among the original,
its exact copy and its near copies. `labels(folder)` reads the kind and family back from the names.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SIDE = 320
KINDS = ("border", "caption", "watermark", "crop", "turn", "grade", "screenshot", "combo")
NEGATIVES = ("burst", "other-crop")
WORDS = ("Summer 2019", "our trip!!", "look at this", "Best day ever", "via @photos", "(c) Studio North",
         "family album", "before / after")


def fit(img: Image.Image, side: int = SIDE) -> Image.Image:
    scale = side / max(img.size)
    return img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))), Image.Resampling.LANCZOS)


def font(size: int):
    return ImageFont.load_default(size=max(8, size))


def colour(rng) -> tuple:
    return tuple(int(v) for v in rng.choice([[255, 255, 255], [0, 0, 0], [24, 24, 24], [240, 236, 228],
                                             rng.integers(0, 256, 3)]))


def border(img, rng):
    w, h = img.size
    if rng.random() < 0.5:  # a frame all round, 4-12 % of the side
        pad = int(rng.uniform(0.04, 0.12) * max(w, h))
        return ImageOps.expand(img, pad, fill=colour(rng))
    # a letterbox: the picture centred on a canvas of another aspect ratio (16:9 or 1:1 or 9:16)
    aspect = float(rng.choice([16 / 9, 1.0, 9 / 16]))
    cw, ch = (max(w, round(h * aspect)), h) if aspect * h > w else (w, max(h, round(w / aspect)))
    if (cw, ch) == (w, h):
        cw, ch = w, round(h * 1.3)
    canvas = Image.new("RGB", (cw, ch), colour(rng))
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def caption(img, rng):
    w, h = img.size
    bar = int(h * rng.uniform(0.10, 0.20))
    fill = colour(rng)
    ink = (0, 0, 0) if sum(fill) > 380 else (255, 255, 255)
    canvas = Image.new("RGB", (w, h + bar), fill)
    top = rng.random() < 0.4
    canvas.paste(img, (0, bar if top else 0))
    draw = ImageDraw.Draw(canvas)
    text = str(rng.choice(WORDS))
    y = (0 if top else h) + bar // 4
    draw.text((int(w * rng.uniform(0.03, 0.3)), y), text, fill=ink, font=font(int(bar * 0.5)))
    return canvas


def watermark(img, rng):
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = int(rng.uniform(90, 170))
    text = str(rng.choice(WORDS))
    if rng.random() < 0.5:  # one large mark across the middle
        draw.text((w * 0.08, h * rng.uniform(0.35, 0.55)), text, fill=(255, 255, 255, alpha), font=font(int(w * 0.09)))
    else:  # a small mark in a corner, with a shadow
        size = int(w * 0.06)
        x, y = w * rng.uniform(0.45, 0.6), h * 0.88
        draw.text((x + 1, y + 1), text, fill=(0, 0, 0, alpha), font=font(size))
        draw.text((x, y), text, fill=(255, 255, 255, alpha), font=font(size))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def crop(img, rng):
    """10-25 % of the area cut away, unevenly, no side losing more than 14 %."""
    w, h = img.size
    for _ in range(100):
        sides = rng.uniform(0, 0.14, 4)
        kept = (1 - sides[0] - sides[2]) * (1 - sides[1] - sides[3])
        if 0.75 <= kept <= 0.90:
            break
    left, top, right, bottom = sides
    return img.crop((round(left * w), round(top * h), round(w * (1 - right)), round(h * (1 - bottom))))


def turn(img, rng):
    w, h = img.size
    angle = float(rng.uniform(2, 5) * rng.choice([-1, 1]))
    turned = img.rotate(angle, Image.Resampling.BICUBIC)
    a = np.deg2rad(abs(angle))  # cut to the largest upright rectangle with no empty corner (a "straighten")
    m = (np.sin(a) * max(w, h) / min(w, h)) / (1 + np.sin(a))
    return turned.crop((round(w * m / 2 + 1), round(h * m / 2 + 1), round(w * (1 - m / 2) - 1), round(h * (1 - m / 2) - 1)))


def grade(img, rng):
    which = rng.choice(["warm", "cool", "faded", "contrast", "sepia", "grey", "vivid", "dark"])
    arr = np.asarray(img, np.float32) / 255
    if which in ("warm", "cool"):
        gains = np.array([1.12, 1.0, 0.85] if which == "warm" else [0.85, 1.0, 1.15])
        arr = arr * gains
    elif which == "faded":  # lifted blacks, lowered whites, less saturation
        grey = arr.mean(-1, keepdims=True)
        arr = 0.15 + 0.7 * (0.6 * arr + 0.4 * grey)
    elif which == "contrast":
        arr = 1 / (1 + np.exp(-(arr - 0.5) * 8))
    elif which == "sepia":
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
        arr = arr @ m.T
    elif which == "grey":
        arr = np.repeat(arr @ np.array([0.299, 0.587, 0.114])[:, None], 3, -1)
    elif which == "vivid":
        return ImageEnhance.Color(ImageEnhance.Contrast(img).enhance(1.25)).enhance(1.6)
    else:  # darker, gamma 1.6
        arr = arr ** 1.6
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))


def screenshot(img, rng):
    """The picture shown at 60-150 % in a window: a title bar, a grey margin, a status line."""
    scale = float(rng.uniform(0.6, 1.5))
    shown = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    w, h = shown.size
    title, margin, status = 28, int(rng.integers(6, 30)), 22
    canvas = Image.new("RGB", (w + 2 * margin, h + title + 2 * margin + status), (236, 236, 236))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, title), fill=(210, 210, 214))
    for i, c in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):
        draw.ellipse((8 + 20 * i, 8, 20 + 20 * i, 20), fill=c)
    draw.text((80, 6), "IMG_0042.jpg - Photos", fill=(40, 40, 40), font=font(14))
    draw.text((margin, canvas.height - status + 3), f"{w} x {h}   {int(scale * 100)} %", fill=(90, 90, 90), font=font(12))
    canvas.paste(shown, (margin, title + margin))
    return canvas


EDITS = {"border": border, "caption": caption, "watermark": watermark, "crop": crop, "turn": turn, "grade": grade,
         "screenshot": screenshot}


def save(img: Image.Image, path: Path, rng) -> Path:
    if rng.random() < 0.5:
        path = path.with_suffix(".jpg")
        img.save(path, quality=int(rng.integers(70, 96)))
    else:
        path = path.with_suffix(".png")
        img.save(path)
    return path


def build(folder: Path, seed: int = 1) -> Path:
    from imgsim.inputs.demo import source_photos

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in source_photos().items():
        w, h = photo.size
        x0 = rng.uniform(0.0, 0.05)
        y0 = rng.uniform(0.0, 0.15)
        box = (x0, y0, x0 + 0.6, y0 + 0.85)
        region = lambda b: photo.crop((round(b[0] * w), round(b[1] * h), round(b[2] * w), round(b[3] * h)))  # noqa: E731
        original = fit(region(box))
        family = folder / name
        family.mkdir(exist_ok=True)
        original.save(family / "original.png")
        shutil.copyfile(family / "original.png", family / "exact.png")
        for kind in KINDS:
            if kind == "combo":
                first, second = rng.choice([k for k in EDITS if k != "screenshot"], 2, replace=False)
                copy = EDITS[str(second)](EDITS[str(first)](original, rng), rng)
            else:
                copy = EDITS[kind](original, rng)
            save(copy, family / kind, rng)
        dx, dy = rng.uniform(0.30, 0.40) * 0.6, rng.uniform(0.0, 0.10) * 0.85 * rng.choice([-1, 1])
        dy = float(np.clip(dy, -box[1], 1 - box[3]))
        fit(region((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy))).save(family / "burst.png")
        fit(region((0.55, 0.0, 1.0, 0.6))).save(family / "other-crop.png")  # overlaps the original on its right 10 %
    return folder


def labels(folder: Path) -> dict[str, tuple[str, str]]:
    """path -> (family, kind) for every file of a built set; kind is 'original', 'exact', an edit or a negative."""
    out = {}
    for path in sorted(Path(folder).rglob("*.*")):
        kind = path.stem
        family = path.parent.name if kind not in NEGATIVES else f"{path.parent.name}/{kind}"
        out[str(path.resolve())] = (family, kind)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    build(args.folder, args.seed)
    print(f"{len(labels(args.folder))} images in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
