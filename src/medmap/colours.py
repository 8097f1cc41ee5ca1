"""One colour per label, defined once: overlays, node thumbnails, report contours, and the DICOM SEG's
Recommended Display CIELab Value all draw a label in the same colour, so a liver is the same brown in
the PACS viewer, on the node's page and in the report.

Known anatomy and findings get fixed colours (the names medmap's label coding knows, `dicomout/codes.py`);
any other label takes the palette entry of its value. A bundle records each label's colour in
``bundle.json`` when it is made.
"""

from __future__ import annotations

Colour = tuple[int, int, int]

# Chosen to stay distinguishable from each other and from grey anatomy (liver brown, like 3D viewers
# draw it; lesions yellow, the highest-contrast colour on CT greys).
NAMED: dict[str, tuple[Colour, str]] = {
    "liver": ((221, 130, 101), "brown"),
    "tumour": ((255, 215, 0), "yellow"),
    "kidney": ((185, 102, 83), "red-brown"),
    "spleen": ((157, 108, 162), "purple"),
    "lung": ((120, 190, 230), "light blue"),
    "heart": ((206, 110, 84), "terracotta"),
    "pancreas": ((249, 180, 111), "orange"),
}
SYNONYMS = {
    "tumor": "tumour",
    "lesion": "tumour",
    "nodule": "tumour",
    "cancer": "tumour",
    "metastasis": "tumour",
    "liver tumour": "tumour",
    "liver tumor": "tumour",
    "kidneys": "kidney",
    "lungs": "lung",
}
PALETTE: tuple[tuple[Colour, str], ...] = (
    ((60, 200, 60), "green"),
    ((235, 60, 60), "red"),
    ((70, 140, 240), "blue"),
    ((210, 80, 220), "magenta"),
    ((60, 215, 215), "cyan"),
    ((245, 140, 40), "orange"),
)


def _entry(name: str, value: int) -> tuple[Colour, str]:
    key = name.strip().lower().replace("_", " ")
    key = SYNONYMS.get(key, key)
    return NAMED.get(key) or PALETTE[(max(int(value), 1) - 1) % len(PALETTE)]


def label_colour(name: str, value: int) -> Colour:
    """The RGB colour (0-255) of label ``value`` called ``name``."""
    return _entry(name, value)[0]


def colour_word(name: str, value: int) -> str:
    """The colour in a word, for legends written as text (an overlay series' description)."""
    return _entry(name, value)[1]


def hex_colour(colour: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)
