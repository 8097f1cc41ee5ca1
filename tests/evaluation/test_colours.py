"""One colour per label everywhere: liver and tumour keep theirs whatever their label values, the overlay
draws each outline in exactly that colour, and unknown labels take distinct palette colours."""

import numpy as np

from medmap.colours import colour_word, hex_colour, label_colour
from medmap.dicomout.overlay import draw_overlay


def test_named_labels_keep_their_colour_whatever_their_value():
    assert label_colour("liver", 1) == label_colour("Liver", 7) == (221, 130, 101)
    assert label_colour("tumour", 2) == label_colour("tumor", 1) == label_colour("nodule", 3)
    assert colour_word("liver", 1) == "brown" and hex_colour((255, 215, 0)) == "#ffd700"
    unknown = {label_colour(f"structure {v}", v) for v in range(1, 7)}
    assert len(unknown) == 6  # six unknown labels, six different colours


def test_overlay_outline_is_the_label_colour():
    grey = np.zeros((32, 32), np.float32)
    labels = np.zeros((32, 32), np.uint8)
    labels[8:24, 8:24] = 1
    labels[14:18, 14:18] = 2
    colours = {1: label_colour("liver", 1), 2: label_colour("tumour", 2)}
    rgb = draw_overlay(grey, labels, (0.0, 1.0), colours)
    assert tuple(rgb[8, 12]) == colours[1]  # the liver's outline
    assert tuple(rgb[14, 15]) == colours[2]  # the tumour's outline
    assert tuple(rgb[0, 0]) == (0, 0, 0)  # background untouched
