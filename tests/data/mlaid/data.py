#!/usr/bin/env python3

"""Write a tiny ML-AID archive in the real layout and formats.

``AID_multilabel/images_tr/<scene>/<scene>_<k>.jpg`` (training images sorted by
scene, as in the official archive), ``AID_multilabel/images_test/<scene>/...``,
``AID_multilabel/multilabel.csv`` (header ``IMAGE\\LABEL,airplane,bare-soil,...``,
first column the image stem) and a deterministic ``AID_multilabel.zip``. Run from
anywhere: files go next to this script.
"""

import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fake_archive import finish_archive, fresh_folder, header, write_csv

SIZE = 16
HEADER = header('IMAGE\\LABEL', '-')
TRAIN = {'airport': 4, 'beach': 4, 'port': 4}
TEST = {'airport': 2, 'port': 2}
# Labels of each scene (class ids); image k adds class (k + 2) % 17 when k is odd.
SCENE_LABELS = {'airport': (0, 10, 8), 'beach': (11, 12), 'port': (13, 16, 6)}


def generate_test_data(root: str) -> str:
    folder = fresh_folder(root, 'AID_multilabel')
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
    write_csv(os.path.join(folder, 'multilabel.csv'), HEADER, rows)
    return finish_archive(root, 'AID_multilabel')


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
