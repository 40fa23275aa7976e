#!/usr/bin/env python3

"""Write a tiny BigEarthNet (v1.0, Sentinel-2) archive in the layout TorchGeo reads.

``bigearthnet-{train,val,test}.csv`` (one ``<s2 patch>,<s1 patch>`` pair per line),
``BigEarthNet-v1.0/<patch>/<patch>_<band>.tif`` (the 12 Sentinel-2 bands as
single-band uint16 GeoTIFFs at 10, 20 and 60 m, so 12, 6 and 2 pixels wide here) and
``BigEarthNet-v1.0/<patch>/<patch>_labels_metadata.json`` (the 43-class CORINE names),
plus a deterministic ``BigEarthNet-S2-v1.0.tar.gz`` of the folder. Run from anywhere:
files go next to this script.
"""

import gzip
import io
import json
import os
import shutil
import tarfile

import numpy as np
import rasterio
from rasterio.transform import from_origin

DIRECTORY = 'BigEarthNet-v1.0'
ARCHIVE = 'BigEarthNet-S2-v1.0.tar.gz'
#: Band name -> side in pixels (10 m: 12, 20 m: 6, 60 m: 2).
BANDS = {
    'B01': 2,
    'B02': 12,
    'B03': 12,
    'B04': 12,
    'B05': 6,
    'B06': 6,
    'B07': 6,
    'B08': 12,
    'B8A': 6,
    'B09': 2,
    'B11': 6,
    'B12': 6,
}
#: Label sets (43-class CORINE names) the patches cycle through; all map to the
#: 19-class nomenclature, and neighbouring sets share a label.
LABEL_SETS = (
    ['Discontinuous urban fabric', 'Non-irrigated arable land'],
    ['Non-irrigated arable land', 'Pastures', 'Mixed forest'],
    ['Coniferous forest', 'Mixed forest'],
    ['Broad-leaved forest', 'Transitional woodland/shrub', 'Water bodies'],
    ['Water bodies', 'Sea and ocean'],
    ['Pastures', 'Complex cultivation patterns', 'Discontinuous urban fabric'],
)
SPLITS = {'train': 6, 'val': 3, 'test': 3}


def write_band(path: str, side: int, values: np.ndarray) -> None:
    profile = {
        'driver': 'GTiff',
        'dtype': 'uint16',
        'count': 1,
        'height': side,
        'width': side,
        'crs': 'EPSG:32633',
        'transform': from_origin(300000.0, 5800000.0, 120.0 / side, 120.0 / side),
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(values.astype(np.uint16), 1)


def generate_test_data(root: str) -> None:
    folder = os.path.join(root, DIRECTORY)
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    number = 0
    for split, count in SPLITS.items():
        lines = []
        for _ in range(count):
            row, col = divmod(number, 10)
            s2 = f'S2A_MSIL2A_20170613T101031_{60 + row}_{30 + col}'
            s1 = f'S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{60 + row}_{30 + col}'
            os.makedirs(os.path.join(folder, s2))
            for band, side in BANDS.items():
                values = rng.integers(1, 10000, (side, side))
                write_band(os.path.join(folder, s2, f'{s2}_{band}.tif'), side, values)
            metadata = {
                'labels': LABEL_SETS[number % len(LABEL_SETS)],
                'coordinates': {'ulx': 300000, 'uly': 5800000},
                'projection': 'EPSG:32633',
                'tile_source': 'S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP',
                'acquisition_date': '2017-06-13 10:10:31',
            }
            with open(os.path.join(folder, s2, f'{s2}_labels_metadata.json'), 'w') as f:
                json.dump(metadata, f, indent=2)
            lines.append(f'{s2},{s1}\n')
            number += 1
        with open(os.path.join(root, f'bigearthnet-{split}.csv'), 'w') as f:
            f.writelines(lines)
    write_archive(root)


def write_archive(root: str) -> None:
    """Tar and gzip the folder deterministically (sorted members, fixed times)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, DIRECTORY)):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, os.path.relpath(path, root))
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ''
                info.mode = 0o644
                with open(path, 'rb') as f:
                    tar.addfile(info, f)
    with gzip.GzipFile(os.path.join(root, ARCHIVE), 'wb', mtime=0) as gz:
        gz.write(buffer.getvalue())


if __name__ == '__main__':
    generate_test_data(os.path.dirname(os.path.abspath(__file__)))
