#!/usr/bin/env python3

"""Write a tiny WHDLD archive in the real layout, with masks in every encoding.

``WHDLD/Images/whNNNN.jpg`` (RGB JPEG) and ``WHDLD/ImagesPNG/whNNNN.png``: masks
wh0001-wh0004 are RGB PNGs in the class colours, wh0005-wh0008 palette PNGs with
index values 1..6, wh0009-wh0012 greyscale PNGs with values 1..6. Masks are built
from rectangles so pixel counts are known. Also a deterministic ``WHDLD.zip``. Run
from anywhere: files go next to this script.
"""

import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fake_archive import WHDLD_COLOURS, finish_archive, fresh_folder, rect_mask

SIZE = 16
COLOURS = WHDLD_COLOURS
# Per image: background class, then (class, row0, row1, col0, col1) rectangles.
LAYOUTS = [
    (3, [(0, 0, 4, 0, 4)]),  # vegetation 240, building 16
    (3, [(5, 0, 8, 0, 16)]),  # vegetation 128, water 128
    (1, [(0, 0, 2, 0, 2), (2, 10, 16, 10, 16)]),
    (4, [(5, 8, 16, 0, 16), (1, 0, 1, 0, 1)]),  # road: 1 pixel
    (0, [(1, 0, 16, 6, 10)]),
    (3, []),
    (5, [(4, 0, 3, 0, 16)]),
    (2, [(0, 4, 12, 4, 12), (3, 0, 2, 0, 16)]),
    (3, [(0, 0, 8, 0, 8), (1, 8, 10, 0, 16)]),
    (4, [(3, 0, 16, 0, 4)]),
    (0, [(2, 12, 16, 12, 16), (5, 0, 2, 0, 2)]),
    (1, [(3, 0, 16, 0, 8)]),
]


def make_mask(i: int) -> np.ndarray:
    background, rects = LAYOUTS[i]
    return rect_mask((SIZE, SIZE), background, rects)


def generate_test_data(root: str) -> str:
    folder = fresh_folder(root, 'WHDLD')
    os.makedirs(os.path.join(folder, 'Images'))
    os.makedirs(os.path.join(folder, 'ImagesPNG'))
    rng = np.random.default_rng(0)
    palette = [v for colour in [(0, 0, 0), *COLOURS] for v in colour]
    for i in range(len(LAYOUTS)):
        name = f'wh{i + 1:04d}'
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(
            os.path.join(folder, 'Images', f'{name}.jpg'), quality=90
        )
        mask = make_mask(i)
        if i < 4:
            png = Image.fromarray(np.asarray(COLOURS, dtype=np.uint8)[mask])
        elif i < 8:
            png = Image.fromarray(mask + 1)
            png.putpalette(palette)
        else:
            png = Image.fromarray(mask + 1)  # greyscale 'L'
        png.save(os.path.join(folder, 'ImagesPNG', f'{name}.png'))
    return finish_archive(root, 'WHDLD')


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
