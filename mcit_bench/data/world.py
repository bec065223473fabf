"""The drawable world behind the embedded stream: colours, shapes, icons, a bitmap font, scenes.

Everything here is pure drawing with PIL and a caller-supplied ``numpy.random.Generator``, so the same
seed gives the same pixels on every machine. The vocabulary of the world (its colours, shapes, icon
categories, words and names) is also the vocabulary of the embedded model's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 64
GRID = 4  # the scene grid: 4 x 4 cells of 16 px, aligned with the vision tower's 16 px patches
CELL = IMAGE_SIZE // GRID

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (38, 82, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 190),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "star": "stars",
}
ICONS: tuple[str, ...] = ("house", "tree", "car", "flower", "snowman", "boat", "cup", "fish")
SIGN_WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "moon", "tree", "fish", "bird", "star",
    "book", "cake", "ship", "lamp", "rose", "king", "frog", "bear",
)
AUTHORS: tuple[str, ...] = ("ann", "bob", "eva", "max", "tom", "zoe", "sam", "lia")
# A book's genre is shown only by its cover colour: knowledge the OCR-VQA-like task has to learn.
GENRES: dict[str, str] = {
    "red": "romance",
    "green": "nature",
    "blue": "travel",
    "yellow": "comedy",
    "purple": "fantasy",
    "orange": "cooking",
}
REGIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

_BLACK = (20, 20, 20)
_WHITE = (250, 250, 250)
_BROWN = (120, 72, 30)

# A 5 x 7 bitmap font (upper case), drawn here so that text renders identically everywhere.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}
GLYPH_W, GLYPH_H = 5, 7


@dataclass(frozen=True)
class Box:
    """A pixel box, x1/y1 exclusive, as PIL draws it."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    box: Box

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box.x0 + self.box.x1) / 2, (self.box.y0 + self.box.y1) / 2)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    """One item, uniformly."""
    return items[int(rng.integers(len(items)))]


def blank(rng: np.random.Generator) -> Image.Image:
    """A light background with a faint random tint, so no two images are pixel-identical."""
    base = np.array([235, 235, 232]) + rng.integers(-12, 13, size=3)
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(int(v) for v in base))


def region_name(x: float, y: float) -> str:
    """The 3 x 3 region word(s) for a point, used by the pre-training descriptions."""
    col = min(2, int(x * 3 / IMAGE_SIZE))
    row = min(2, int(y * 3 / IMAGE_SIZE))
    return REGIONS[row][col]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box.x0, box.y0, box.x1 - 1, box.y1 - 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        tx, ty = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + tx, y0, x1 - tx, y1), fill=fill)
        draw.rectangle((x0, y0 + ty, x1, y1 - ty), fill=fill)
    elif shape == "star":
        rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
        points = []
        for k in range(10):
            angle = -np.pi / 2 + k * np.pi / 5
            scale = 1.0 if k % 2 == 0 else 0.45
            points.append((cx + scale * rx * np.cos(angle), cy + scale * ry * np.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_icon(draw: ImageDraw.ImageDraw, icon: str, box: Box, main: tuple[int, int, int]) -> None:
    """Draw one object category inside ``box``; ``main`` is its dominant colour."""
    x0, y0, w, h = box.x0, box.y0, box.width, box.height

    def at(fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[float, float, float, float]:
        return (x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w - 1, y0 + fy1 * h - 1)

    def pt(fx: float, fy: float) -> tuple[float, float]:
        return (x0 + fx * w, y0 + fy * h)

    if icon == "house":
        draw.rectangle(at(0.15, 0.45, 0.85, 1.0), fill=main)
        draw.polygon([pt(0.0, 0.48), pt(0.5, 0.0), pt(1.0, 0.48)], fill=_BROWN)
        draw.rectangle(at(0.42, 0.7, 0.58, 1.0), fill=_BLACK)
    elif icon == "tree":
        draw.rectangle(at(0.4, 0.55, 0.6, 1.0), fill=_BROWN)
        draw.ellipse(at(0.05, 0.0, 0.95, 0.7), fill=main)
    elif icon == "car":
        draw.rectangle(at(0.0, 0.4, 1.0, 0.8), fill=main)
        draw.rectangle(at(0.2, 0.15, 0.75, 0.45), fill=main)
        draw.ellipse(at(0.1, 0.65, 0.35, 0.95), fill=_BLACK)
        draw.ellipse(at(0.65, 0.65, 0.9, 0.95), fill=_BLACK)
    elif icon == "flower":
        draw.rectangle(at(0.46, 0.5, 0.54, 1.0), fill=(34, 140, 50))
        for fx, fy in ((0.5, 0.12), (0.28, 0.32), (0.72, 0.32), (0.5, 0.5)):
            draw.ellipse(at(fx - 0.16, fy - 0.14, fx + 0.16, fy + 0.14), fill=main)
        draw.ellipse(at(0.42, 0.24, 0.58, 0.4), fill=(235, 205, 30))
    elif icon == "snowman":
        draw.ellipse(at(0.15, 0.4, 0.85, 1.0), fill=_WHITE, outline=main)
        draw.ellipse(at(0.28, 0.0, 0.72, 0.45), fill=_WHITE, outline=main)
        draw.rectangle(at(0.46, 0.18, 0.54, 0.26), fill=main)
    elif icon == "boat":
        draw.polygon([pt(0.0, 0.62), pt(1.0, 0.62), pt(0.8, 0.95), pt(0.2, 0.95)], fill=_BROWN)
        draw.polygon([pt(0.5, 0.0), pt(0.5, 0.58), pt(0.9, 0.58)], fill=main)
        draw.rectangle(at(0.46, 0.0, 0.52, 0.62), fill=_BLACK)
    elif icon == "cup":
        draw.rectangle(at(0.1, 0.2, 0.7, 1.0), fill=main)
        draw.ellipse(at(0.58, 0.35, 0.98, 0.8), outline=main, width=max(1, w // 10))
    elif icon == "fish":
        draw.ellipse(at(0.0, 0.25, 0.72, 0.75), fill=main)
        draw.polygon([pt(0.62, 0.5), pt(1.0, 0.2), pt(1.0, 0.8)], fill=main)
        draw.ellipse(at(0.14, 0.4, 0.24, 0.5), fill=_BLACK)
    else:
        raise ValueError(f"unknown icon {icon!r}")


def draw_text(image: Image.Image, text: str, x: int, y: int, scale: int, fill: tuple[int, int, int]) -> None:
    """Render upper-case ``text`` with the bitmap font, top-left at (x, y)."""
    draw = ImageDraw.Draw(image)
    for index, char in enumerate(text.upper()):
        glyph = _GLYPHS[char]
        gx = x + index * (GLYPH_W + 1) * scale
        for row, bits in enumerate(glyph):
            for col, bit in enumerate(bits):
                if bit == "#":
                    px, py = gx + col * scale, y + row * scale
                    draw.rectangle((px, py, px + scale - 1, py + scale - 1), fill=fill)


def random_box_in_cells(rng: np.random.Generator, col: int, row: int, span: int) -> Box:
    """A box filling ``span`` x ``span`` grid cells from (col, row), with a small random margin."""
    size = span * CELL
    margin_lo = int(rng.integers(1, 4))
    margin_hi = int(rng.integers(1, 4))
    x0 = col * CELL + margin_lo
    y0 = row * CELL + int(rng.integers(1, 4))
    return Box(x0, y0, col * CELL + size - margin_hi, row * CELL + size - int(rng.integers(1, 4)))


def sample_scene(
    rng: np.random.Generator,
    n_objects: int,
    allow_big: bool = True,
    distinct: bool = True,
    shapes: list[str] | None = None,
) -> list[SceneObject]:
    """Objects on the grid, non-overlapping; with ``distinct`` no two share colour and shape.

    ``shapes``, when given, fixes the shape of each object in turn (``n_objects`` of them).
    """
    occupied = np.zeros((GRID, GRID), dtype=bool)
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    while len(objects) < n_objects:
        span = 2 if allow_big and rng.random() < 0.25 else 1
        col, row = int(rng.integers(GRID - span + 1)), int(rng.integers(GRID - span + 1))
        if occupied[row : row + span, col : col + span].any():
            continue
        colour = pick(rng, list(COLOURS))
        shape = shapes[len(objects)] if shapes else pick(rng, SHAPES)
        if distinct and (colour, shape) in used:
            continue
        occupied[row : row + span, col : col + span] = True
        used.add((colour, shape))
        objects.append(SceneObject(colour, shape, random_box_in_cells(rng, col, row, span)))
    return objects


def render_scene(rng: np.random.Generator, objects: list[SceneObject]) -> Image.Image:
    image = blank(rng)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_shape(draw, obj.shape, obj.box, COLOURS[obj.colour])
    return image


def aligned_box(rng: np.random.Generator, span: int) -> Box:
    """A box of ``span`` x ``span`` cells at a random cell position (with the usual small margin)."""
    col, row = int(rng.integers(GRID - span + 1)), int(rng.integers(GRID - span + 1))
    return random_box_in_cells(rng, col, row, span)


def render_single_shape(rng: np.random.Generator, colour: str, shape: str) -> tuple[Image.Image, Box]:
    """One shape, one to three cells wide, on the grid."""
    image = blank(rng)
    box = aligned_box(rng, int(rng.integers(1, 4)))
    draw_shape(ImageDraw.Draw(image), shape, box, COLOURS[colour])
    return image, box


def render_icon(rng: np.random.Generator, icon: str, colour: str) -> tuple[Image.Image, Box]:
    """One object, two to four cells wide, on the grid."""
    image = blank(rng)
    box = aligned_box(rng, int(rng.integers(2, 5)))
    draw_icon(ImageDraw.Draw(image), icon, box, COLOURS[colour])
    return image, box


def draw_word_in_cells(image: Image.Image, word: str, col: int, row: int, ink: tuple[int, int, int]) -> None:
    """One letter per grid cell, each centred in its cell: a patch sees exactly one glyph."""
    for index, char in enumerate(word):
        x = (col + index) * CELL + (CELL - GLYPH_W * 2) // 2
        y = row * CELL + (CELL - GLYPH_H * 2) // 2
        draw_text(image, char, x, y, 2, ink)


def ink_on(colour: str) -> tuple[int, int, int]:
    return _BLACK if colour in ("yellow", "orange") else _WHITE


def render_sign(rng: np.random.Generator, word: str, colour: str) -> Image.Image:
    """A coloured sign carrying ``word`` on one row of the grid, on a post when there is room."""
    image = blank(rng)
    draw = ImageDraw.Draw(image)
    col = int(rng.integers(GRID - len(word) + 1))
    row = int(rng.integers(GRID))
    x0, y0 = col * CELL, row * CELL
    draw.rectangle((x0, y0, x0 + len(word) * CELL - 1, y0 + CELL - 1), fill=COLOURS[colour])
    draw_word_in_cells(image, word, col, row, ink_on(colour))
    if row < GRID - 1:
        middle = x0 + len(word) * CELL // 2
        draw.rectangle((middle - 1, y0 + CELL, middle + 1, IMAGE_SIZE - 1), fill=_BROWN)
    return image


def render_book(rng: np.random.Generator, title: str, author: str, colour: str) -> Image.Image:
    """A book cover filling the frame: title in the top half, author on the bottom row, genre by colour."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLOURS[colour])
    draw = ImageDraw.Draw(image)
    ink = ink_on(colour)
    draw_word_in_cells(image, title, int(rng.integers(GRID - len(title) + 1)), int(rng.integers(2)), ink)
    draw.rectangle((4, 2 * CELL + 7, IMAGE_SIZE - 5, 2 * CELL + 8), fill=ink)
    draw_word_in_cells(image, author, int(rng.integers(GRID - len(author) + 1)), GRID - 1, ink)
    return image


def degrade(rng: np.random.Generator, image: Image.Image, level: str) -> Image.Image:
    """Blur, darken or add noise like a photo taken blind; ``level`` is 'mild' or 'severe'."""
    kind = pick(rng, ("blur", "dark", "noise"))
    if kind == "blur":
        radius = float(rng.uniform(0.5, 1.2)) if level == "mild" else float(rng.uniform(5.0, 8.0))
        return image.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(image, dtype=np.float32)
    if kind == "dark":
        factor = float(rng.uniform(0.55, 0.8)) if level == "mild" else float(rng.uniform(0.04, 0.1))
        pixels = pixels * factor
    else:
        sigma = float(rng.uniform(10, 25)) if level == "mild" else float(rng.uniform(110, 150))
        pixels = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    degraded = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    # heavy noise alone leaves large shapes visible; blurred with it, nothing is left to read
    return degraded.filter(ImageFilter.GaussianBlur(3.0)) if level == "severe" and kind == "noise" else degraded


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
