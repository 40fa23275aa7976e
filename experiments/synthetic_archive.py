"""The synthetic land-cover archive of the ``synthetic`` configs.

``run.py`` writes it under the configs' ``data.init_args.root`` when it is missing,
and records the parameters it was written with next to it, so that a later grid does
not silently reuse an archive of another size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from provenance import write_json_atomic

#: Datasets whose archive this script writes when missing, and its parameters
#: (arguments of :func:`torchgeo_macl.datasets.make_synthetic_dlrsd`).
SYNTHETIC_DATASETS = ('synthetic',)
SYNTHETIC_ARCHIVE: dict[str, int] = {'num_images': 840, 'image_size': 64, 'seed': 0}
#: File next to the generated archive recording the parameters it was made with.
SYNTHETIC_PARAMS_FILE = 'synthetic_archive.json'


def ensure_synthetic_archive(
    root: Path, params: Mapping[str, int], dry_run: bool = False
) -> bool:
    """Write the synthetic archive under ``root`` unless ``root/DLRSD`` exists.

    An existing archive is reused when the parameters recorded next to it
    (``synthetic_archive.json``) are the requested ones; an archive without that
    record (written by hand) is reused with a warning.

    Args:
        root: ``data.init_args.root`` of the synthetic config.
        params: Arguments of :func:`torchgeo_macl.datasets.make_synthetic_dlrsd`.
        dry_run: Only tell whether it would be written.

    Returns:
        True if the archive was (or would be) written.

    Raises:
        ValueError: If the existing archive was written with other parameters.
    """
    if (root / 'DLRSD').is_dir():
        record = root / SYNTHETIC_PARAMS_FILE
        if not record.is_file():
            print(
                f'warning: reusing {root / "DLRSD"}, which has no {record.name}: '
                f'its parameters cannot be checked against {dict(params)}',
                flush=True,
            )
            return False
        recorded = json.loads(record.read_text('utf-8'))
        if recorded != dict(params):
            raise ValueError(
                f'the synthetic archive {root / "DLRSD"} was written with '
                f'{recorded} ({record}), but {dict(params)} is requested: delete '
                f'{root} to write it again, or pass --synthetic-images '
                f'{recorded.get("num_images")} --synthetic-size '
                f'{recorded.get("image_size")}'
            )
        return False
    if dry_run:
        return True
    from torchgeo_macl.datasets import make_synthetic_dlrsd

    start = time.perf_counter()
    print(f'writing the synthetic archive {root / "DLRSD"} ({dict(params)})')
    make_synthetic_dlrsd(root, **params)
    write_json_atomic(root / SYNTHETIC_PARAMS_FILE, dict(params))
    print(f'  done in {time.perf_counter() - start:.1f} s')
    return True
