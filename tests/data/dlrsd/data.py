#!/usr/bin/env python3

"""Write a tiny DLRSD archive in the real layout and formats.

``DLRSD/Images/<scene>/<scene>NN.tif`` (RGB TIFF), ``DLRSD/Labels/<scene>/<scene>NN.png``
(palette PNG, values 1..17), ``DLRSD/multilabels.csv`` (the real header, labels equal
to the classes in each mask) and a deterministic ``DLRSD.zip``. Masks are built from
rectangles so every class's pixel count is known; ``harbor03`` is 16x15 like the few
UC Merced images that are not square. Run from anywhere: files go next to this script.
"""

import io
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fake_archive import finish_archive, fresh_folder, header, rect_mask, write_csv

SIZE = 16
SCENES = ('agricultural', 'airplane', 'harbor')
IMAGES_PER_SCENE = 4
HEADER = header('image', '')
PALETTE = [0, 0, 0] + [(37 * k) % 256 for k in range(3 * 17)]

# Per image: background class, then (class, row0, row1, col0, col1) rectangles
# (class ids 0..16; the mask stores id + 1).
LAYOUTS = {
    'agricultural00': (7, [(15, 0, 4, 0, 16)]),  # field 192, trees 64
    'agricultural01': (7, [(8, 0, 8, 0, 8)]),  # field 192, grass 64
    'agricultural02': (7, [(15, 0, 2, 0, 16), (1, 14, 16, 0, 4)]),
    'agricultural03': (7, []),  # field only
    'airplane00': (10, [(0, 4, 8, 4, 8), (8, 0, 1, 0, 4)]),  # airplane 16, grass 4
    'airplane01': (10, [(0, 0, 6, 0, 6), (3, 10, 12, 10, 12)]),
    'airplane02': (10, [(0, 8, 10, 8, 10), (8, 0, 4, 0, 16)]),
    'airplane03': (10, [(3, 0, 1, 0, 1)]),  # cars 1 pixel
    'harbor00': (16, [(13, 2, 4, 2, 6), (6, 10, 16, 0, 3)]),  # ship, dock
    'harbor01': (16, [(13, 5, 7, 5, 9), (10, 12, 16, 0, 16)]),
    'harbor02': (12, [(13, 0, 2, 0, 2), (11, 14, 16, 0, 16)]),  # sea, ship, sand
    'harbor03': (16, [(6, 0, 16, 0, 2), (2, 0, 4, 10, 15)]),  # 16x15 image
}


def make_mask(name: str) -> np.ndarray:
    background, rects = LAYOUTS[name]
    width = 15 if name == 'harbor03' else SIZE
    return rect_mask((SIZE, width), background, rects, offset=1)


def generate_test_data(root: str) -> str:
    folder = fresh_folder(root, 'DLRSD')
    rng = np.random.default_rng(0)
    rows = []
    for scene in SCENES:
        os.makedirs(os.path.join(folder, 'Images', scene))
        os.makedirs(os.path.join(folder, 'Labels', scene))
        for i in range(IMAGES_PER_SCENE):
            name = f'{scene}{i:02d}'
            mask = make_mask(name)
            image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
            Image.fromarray(image).save(
                os.path.join(folder, 'Images', scene, f'{name}.tif')
            )
            png = Image.fromarray(mask)
            png.putpalette(PALETTE)
            buffer = io.BytesIO()
            png.save(buffer, format='PNG')
            with open(os.path.join(folder, 'Labels', scene, f'{name}.png'), 'wb') as f:
                f.write(buffer.getvalue())
            present = np.bincount(mask.ravel() - 1, minlength=17) > 0
            rows.append([name, *present.astype(int).tolist()])
    write_csv(os.path.join(folder, 'multilabels.csv'), HEADER, rows)
    return finish_archive(root, 'DLRSD')


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
