#!/usr/bin/env python3

"""Write a tiny ML-AID archive in the real layout and formats.

``AID_multilabel/images_tr/<scene>/<scene>_<k>.jpg`` (training images sorted by
scene, as in the official archive), ``AID_multilabel/images_test/<scene>/...``,
``AID_multilabel/multilabel.csv`` (header ``IMAGE\\LABEL,airplane,bare-soil,...``,
first column the image stem) and a deterministic ``AID_multilabel.zip``. Run from
anywhere: files go next to this script.
"""

import csv
import hashlib
import os
import shutil
import zipfile

import numpy as np
from PIL import Image

SIZE = 16
HEADER = [
    'IMAGE\\LABEL',
    'airplane',
    'bare-soil',
    'buildings',
    'cars',
    'chaparral',
    'court',
    'dock',
    'field',
    'grass',
    'mobile-home',
    'pavement',
    'sand',
    'sea',
    'ship',
    'tanks',
    'trees',
    'water',
]
TRAIN = {'airport': 4, 'beach': 4, 'port': 4}
TEST = {'airport': 2, 'port': 2}
# Labels of each scene (class ids); image k adds class (k + 2) % 17 when k is odd.
SCENE_LABELS = {'airport': (0, 10, 8), 'beach': (11, 12), 'port': (13, 16, 6)}


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
    folder = os.path.join(root, 'AID_multilabel')
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    rows = []
    for split, scenes, start in (('images_tr', TRAIN, 1), ('images_test', TEST, 101)):
        for scene, count in scenes.items():
            os.makedirs(os.path.join(folder, split, scene))
            for k in range(start, start + count):
                stem = f'{scene}_{k}'
                image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(image).save(
                    os.path.join(folder, split, scene, f'{stem}.jpg'), quality=90
                )
                labels = np.zeros(17, dtype=int)
                labels[list(SCENE_LABELS[scene])] = 1
                if k % 2:
                    labels[(k + 2) % 17] = 1
                rows.append([stem, *labels.tolist()])
    with open(os.path.join(folder, 'multilabel.csv'), 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(HEADER)
        writer.writerows(rows)
    archive = os.path.join(root, 'AID_multilabel.zip')
    write_zip(root, 'AID_multilabel', archive)
    with open(archive, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f'AID_multilabel.zip sha256: {digest}')
    return digest


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
