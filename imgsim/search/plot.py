"""The query and its results as one picture grid (PNG), captioned with score and group."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from imgsim.core.errors import ImageError
from imgsim.inputs.images import thumbnail
from imgsim.search import QueryResult

TILE = 160
CAPTION = 30


def result_grid(query_image: Image.Image, result: QueryResult, columns: int = 5) -> Image.Image:
    """Query first, then each hit, `columns` tiles per row; unreadable hits become grey tiles."""
    tiles = [(query_image, f"query · group {result.cluster}")]
    for hit in result.results:
        try:
            img = thumbnail(hit.path, TILE)
        except ImageError:
            img = Image.new("RGB", (TILE, TILE), (200, 200, 200))
        tiles.append((img, f"{hit.score:.3f} · group {hit.cluster}\n{Path(hit.path).name[:24]}"))
    rows = (len(tiles) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, caption) in enumerate(tiles):
        img = img.copy()
        img.thumbnail((TILE, TILE))
        x, y = (k % columns) * TILE, (k // columns) * (TILE + CAPTION)
        canvas.paste(img, (x + (TILE - img.width) // 2, y + (TILE - img.height) // 2))
        draw.multiline_text((x + 4, y + TILE + 1), caption, fill="black", spacing=1)
    return canvas


def save_grid(path, query_image: Image.Image, result: QueryResult) -> Path:
    path = Path(path)
    result_grid(query_image, result).save(path, format="PNG")
    return path


def grid_path(path: Path, number: int, count: int) -> Path:
    """Where the grid of query `number` (1-based) of `count` goes: PATH itself for one query, PATH-N.png for several."""
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")
