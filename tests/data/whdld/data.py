#!/usr/bin/env python3

"""Write a tiny WHDLD archive in the real layout, with masks in every encoding.

``WHDLD/Images/whNNNN.jpg`` (RGB JPEG) and ``WHDLD/ImagesPNG/whNNNN.png``: masks
wh0001-wh0004 are RGB PNGs in the class colours, wh0005-wh0008 palette PNGs with
index values 1..6, wh0009-wh0012 greyscale PNGs with values 1..6. Masks are built
from rectangles so pixel counts are known. Also a deterministic ``WHDLD.zip``. Run
from anywhere: files go next to this script.
"""

import hashlib
import os
import shutil
import zipfile

import numpy as np
from PIL import Image

SIZE = 16
COLOURS = [
    (255, 0, 0),
    (255, 255, 0),
    (192, 192, 0),
    (0, 255, 0),
    (128, 128, 128),
    (0, 0, 255),
]
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
    mask = np.full((SIZE, SIZE), background, dtype=np.uint8)
    for cls, r0, r1, c0, c1 in rects:
        mask[r0:r1, c0:c1] = cls
    return mask


def write_zip(root: str, folder: str, archive: str) -> None:
    with zipfile.ZipFile(archive, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        paths = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames.sort()
            paths.extend(os.path.join(dirpath, f) for f in sorted(filenames))
        for path in sorted(paths):
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, 'rb') as f:
                zf.writestr(info, f.read())


def generate_test_data(root: str) -> str:
    folder = os.path.join(root, 'WHDLD')
    shutil.rmtree(folder, ignore_errors=True)
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
    archive = os.path.join(root, 'WHDLD.zip')
    write_zip(root, 'WHDLD', archive)
    with open(archive, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f'WHDLD.zip sha256: {digest}')
    return digest


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
