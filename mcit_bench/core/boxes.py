"""Boxes in each source's convention: the frame a box must lie in (readers refuse one outside it,
scoring reads one from an answer)."""

from __future__ import annotations


def box_limits(convention: str, size: tuple[float, float] | None) -> tuple[float, float]:
    """The largest x and y a box may reach: 1 on the padded square (LLaVA, CoIN), 1000 (InternVL), or
    the image's own width and height for pixel boxes."""
    if convention == "pixel":
        if size is None:
            raise ValueError("pixel boxes need the image size")
        return float(size[0]), float(size[1])
    return (1000.0, 1000.0) if convention == "thousand" else (1.0, 1.0)


def box_inside(box: tuple[float, ...] | list[float], convention: str, size: tuple[float, float] | None) -> bool:
    """A box with area that lies within the frame of its convention."""
    width, height = box_limits(convention, size)
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
