"""A deterministic synthetic land-cover archive in the DLRSD layout.

The archive is the embedded default of the package: the demo, the tests and the
benchmarks read it through :class:`~torchgeo_macl.datasets.DLRSD`. It has the 17
DLRSD classes with long-tailed (Zipf-like) label frequencies, co-occurrence rules
(a ship only on sea or water, an airplane on pavement, cars on pavement, ...), and
images rendered from spatial label maps with per-class colour and texture, per-image
colour jitter, illumination changes and sensor noise, so retrieval is learnable but
not trivial and labels are spatial (cropping can drop them).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .dlrsd import DLRSD
from .utils import PathLike, normalise_class_name

__all__ = ('make_synthetic_dlrsd',)

#: The 21 UC Merced scene classes (the scene folders of DLRSD).
SCENES: tuple[str, ...] = (
    'agricultural',
    'airplane',
    'baseballdiamond',
    'beach',
    'buildings',
    'chaparral',
    'denseresidential',
    'forest',
    'freeway',
    'golfcourse',
    'harbor',
    'intersection',
    'mediumresidential',
    'mobilehomepark',
    'overpass',
    'parkinglot',
    'river',
    'runway',
    'sparseresidential',
    'storagetanks',
    'tenniscourt',
)

# DLRSD class ids (0-based; the masks store id + 1).
AIRPLANE, BARE_SOIL, BUILDINGS, CARS, CHAPARRAL, COURT, DOCK, FIELD = range(8)
GRASS, MOBILE_HOME, PAVEMENT, SAND, SEA, SHIP, TANKS, TREES, WATER = range(8, 17)
NUM_CLASSES = 17

#: Header of ``multilabels.csv`` in the DLRSD archive (``'image'``, ``'baresoil'``, ...).
CSV_HEADER: tuple[str, ...] = (
    'image',
    *(normalise_class_name(name) for name in DLRSD.classes),
)

#: Classes from the most to the least frequent (rank r has base rate ~ r^-s).
FREQUENCY_ORDER: tuple[int, ...] = (
    PAVEMENT,
    TREES,
    GRASS,
    BUILDINGS,
    CARS,
    BARE_SOIL,
    WATER,
    FIELD,
    COURT,
    CHAPARRAL,
    SAND,
    SEA,
    MOBILE_HOME,
    DOCK,
    SHIP,
    TANKS,
    AIRPLANE,
)

#: Area classes, painted first as the land-cover background.
AREA_CLASSES: tuple[int, ...] = (
    BARE_SOIL,
    CHAPARRAL,
    FIELD,
    GRASS,
    PAVEMENT,
    SAND,
    SEA,
    TREES,
    WATER,
)
_LAND = (PAVEMENT, BARE_SOIL, GRASS, FIELD, SAND, CHAPARRAL, TREES)

#: Object classes and the area classes they may sit on (the first is added to an
#: image's labels when none of them is present: the co-occurrence rules).
HOSTS: dict[int, tuple[int, ...]] = {
    AIRPLANE: (PAVEMENT,),
    CARS: (PAVEMENT,),
    TANKS: (BARE_SOIL, PAVEMENT),
    SHIP: (WATER, SEA),
    DOCK: (WATER, SEA),
    MOBILE_HOME: (PAVEMENT, GRASS, BARE_SOIL),
    BUILDINGS: _LAND,
    COURT: _LAND,
}
#: Objects painted in this order (large ones first).
OBJECT_ORDER: tuple[int, ...] = (
    BUILDINGS,
    COURT,
    DOCK,
    AIRPLANE,
    TANKS,
    MOBILE_HOME,
    SHIP,
    CARS,
)
#: (min instances, max instances, min side, max side) at 128 px.
OBJECT_SHAPES: dict[int, tuple[int, int, int, int]] = {
    AIRPLANE: (1, 2, 14, 22),
    BUILDINGS: (2, 6, 8, 18),
    CARS: (3, 9, 2, 5),
    COURT: (1, 2, 12, 18),
    DOCK: (1, 2, 4, 16),
    MOBILE_HOME: (3, 8, 3, 7),
    SHIP: (1, 3, 3, 9),
    TANKS: (1, 4, 6, 11),
}

#: Scene -> classes that are common in it (their rate is raised).
SCENE_CLASSES: dict[str, tuple[int, ...]] = {
    'agricultural': (FIELD,),
    'airplane': (AIRPLANE, PAVEMENT),
    'baseballdiamond': (GRASS, BARE_SOIL),
    'beach': (SAND, SEA),
    'buildings': (BUILDINGS, PAVEMENT),
    'chaparral': (CHAPARRAL,),
    'denseresidential': (BUILDINGS, CARS),
    'forest': (TREES,),
    'freeway': (PAVEMENT, CARS),
    'golfcourse': (GRASS, TREES, SAND),
    'harbor': (SHIP, DOCK, WATER),
    'intersection': (PAVEMENT, CARS),
    'mediumresidential': (BUILDINGS, TREES),
    'mobilehomepark': (MOBILE_HOME, PAVEMENT),
    'overpass': (PAVEMENT, CARS),
    'parkinglot': (CARS, PAVEMENT),
    'river': (WATER, TREES),
    'runway': (PAVEMENT, GRASS),
    'sparseresidential': (BUILDINGS, GRASS),
    'storagetanks': (TANKS, BARE_SOIL),
    'tenniscourt': (COURT, TREES),
}

#: Base RGB colour of every class.
CLASS_COLOURS: NDArray[np.float32] = np.array(
    [
        (205, 205, 210),  # airplane
        (150, 120, 86),  # bare soil
        (168, 104, 92),  # buildings
        (62, 74, 160),  # cars
        (108, 112, 72),  # chaparral
        (160, 82, 62),  # court
        (140, 120, 100),  # dock
        (172, 160, 92),  # field
        (88, 146, 68),  # grass
        (214, 212, 198),  # mobile home
        (116, 116, 122),  # pavement
        (222, 206, 160),  # sand
        (26, 72, 122),  # sea
        (236, 236, 236),  # ship
        (196, 198, 188),  # tanks
        (42, 90, 46),  # trees
        (42, 86, 96),  # water
    ],
    dtype=np.float32,
)
#: Texture amplitude of every class (relative brightness modulation).
TEXTURE_AMPLITUDE: NDArray[np.float32] = np.array(
    [0.05, 0.18, 0.12, 0.1, 0.3, 0.06, 0.15, 0.22, 0.16, 0.08, 0.1, 0.12, 0.08, 0.04,
     0.05, 0.35, 0.06],
    dtype=np.float32,
)  # fmt: skip

#: Palette of the mask PNGs (index 0 unused, index c + 1 = class c): DLRSD's colours.
MASK_PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), *(DLRSD.colormap or ()))

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _smooth_fields(
    rng: np.random.Generator, count: int, size: int, cells: int
) -> NDArray[np.float32]:
    """Smooth random fields (bilinear upsampling of a coarse random grid).

    Args:
        rng: Random generator.
        count: Number of fields.
        size: Side of every field in pixels.
        cells: Side of the coarse grid.

    Returns:
        float32 [count, size, size], each with zero mean and unit std.
    """
    coarse = rng.standard_normal((count, cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    frac = pos - i0
    rows = (
        coarse[:, i0] * (1 - frac)[None, :, None]
        + coarse[:, i0 + 1] * frac[None, :, None]
    )
    fields = rows[:, :, i0] * (1 - frac) + rows[:, :, i0 + 1] * frac
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
    return fields.astype(np.float32)


def _textures(rng: np.random.Generator, size: int) -> NDArray[np.float32]:
    """A texture field per class, roughly in [-1, 1].

    Args:
        rng: Random generator.
        size: Side of every texture (twice the image side, for random crops).

    Returns:
        float32 [17, size, size].
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fine = rng.standard_normal((NUM_CLASSES, size, size)).astype(np.float32) * 0.5
    blotch = _smooth_fields(rng, NUM_CLASSES, size, max(size // 6, 2))
    tex = np.clip(0.6 * blotch + fine, -2.5, 2.5) / 2.5
    stripes = np.sin((xx * 0.8 + yy * 0.3) * 0.9)  # rows of crops
    tex[FIELD] = 0.7 * stripes + 0.3 * tex[FIELD]
    waves = np.sin((xx * 0.2 + yy) * 0.35)  # ripples
    tex[SEA] = 0.6 * waves + 0.4 * tex[SEA]
    tex[WATER] = 0.4 * waves + 0.6 * tex[WATER]
    tex[SAND] = 0.5 * np.sin((xx + yy * 0.4) * 0.5) + 0.5 * tex[SAND]
    grid = ((xx.astype(np.int64) // 4 + yy.astype(np.int64) // 4) % 2) * 2.0 - 1.0
    tex[BUILDINGS] = 0.5 * grid + 0.5 * tex[BUILDINGS]  # roof tiles
    tex[TREES] = np.clip(2.0 * blotch[TREES] + fine[TREES], -1, 1)  # crowns
    lanes = (xx.astype(np.int64) % 16 == 0).astype(np.float32) * 1.5 - 0.1
    tex[PAVEMENT] = 0.3 * lanes + 0.7 * tex[PAVEMENT]
    return tex.astype(np.float32)


def _sample_labels(
    rng: np.random.Generator,
    scenes: NDArray[np.int64],
    zipf_exponent: float,
    max_rate: float = 0.4,
) -> NDArray[np.bool_]:
    """Draw the planned labels of every image (vectorised over images).

    Args:
        rng: Random generator.
        scenes: Scene index of every image [N].
        zipf_exponent: Exponent s of the base rates max_rate * rank^-s.
        max_rate: Base rate of the most frequent class.

    Returns:
        bool [N, 17] with at least one area class and every object's host.
    """
    num = len(scenes)
    rate = np.zeros(NUM_CLASSES)
    ranks = np.arange(1, NUM_CLASSES + 1, dtype=np.float64)
    rate[list(FREQUENCY_ORDER)] = max_rate * ranks**-zipf_exponent
    boost = np.zeros((len(SCENES), NUM_CLASSES), dtype=bool)
    for s, name in enumerate(SCENES):
        boost[s, list(SCENE_CLASSES[name])] = True
    prob = np.where(boost[scenes], np.maximum(rate, 0.85), rate)
    labels = rng.random((num, NUM_CLASSES)) < prob

    # Co-occurrence rules: every object gets one of its host classes.
    for obj, hosts in HOSTS.items():
        missing = labels[:, obj] & ~labels[:, list(hosts)].any(axis=1)
        pick = rng.integers(0, len(hosts), size=num)
        host = np.asarray(hosts)[pick]
        labels[np.flatnonzero(missing), host[missing]] = True
    # Every image needs an area class to paint the background with.
    area = list(AREA_CLASSES)
    none = ~labels[:, area].any(axis=1)
    weights = rate[area] / rate[area].sum()
    labels[np.flatnonzero(none), rng.choice(area, size=num, p=weights)[none]] = True
    return labels


def _paint_mask(
    rng: np.random.Generator,
    planned: NDArray[np.bool_],
    size: int,
    fields: NDArray[np.float32],
) -> NDArray[np.uint8]:
    """Paint the class map of one image.

    Area classes: the first fills the canvas, the others are smooth blobs, parcels
    or road strips. Objects are rectangles on pixels of one of their host classes;
    an instance that would remove its host's last pixel is undone, so every object
    in the final mask keeps a host in the image.

    Args:
        rng: Random generator of this image.
        planned: Planned labels [17].
        size: Image side.
        fields: Smooth fields [K, 2 * size, 2 * size] for blob shapes.

    Returns:
        uint8 class ids [size, size].
    """
    areas = [c for c in AREA_CLASSES if planned[c]]
    areas = [areas[i] for i in rng.permutation(len(areas))]
    mask = np.full((size, size), areas[0], dtype=np.uint8)
    for c in areas[1:]:
        kind = rng.random()
        if c == FIELD or (c != PAVEMENT and kind < 0.25):
            h, w = rng.integers(size // 4, size * 3 // 4 + 1, size=2)
            y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            mask[y : y + h, x : x + w] = c
        elif c == PAVEMENT and kind < 0.6:
            width = int(rng.integers(max(size // 16, 2), max(size // 6, 3) + 1))
            start = int(rng.integers(0, size - width + 1))
            if rng.random() < 0.5:
                mask[start : start + width] = c
            else:
                mask[:, start : start + width] = c
        else:
            k = int(rng.integers(len(fields)))
            dy, dx = rng.integers(0, size + 1, size=2)
            crop = fields[k, dy : dy + size, dx : dx + size]
            blob = crop > rng.uniform(-0.2, 1.0)
            if not blob.any():
                blob = crop >= float(np.max(crop))
            mask[blob] = c

    scale = size / 128.0
    for obj in OBJECT_ORDER:
        if not planned[obj]:
            continue
        hosts = [h for h in HOSTS[obj] if (mask == h).any()]
        if not hosts:
            continue
        host = hosts[int(rng.integers(len(hosts)))]
        lo, hi, smin, smax = OBJECT_SHAPES[obj]
        smin = max(round(smin * scale), 1)
        smax = max(round(smax * scale), smin)
        for _ in range(int(rng.integers(lo, hi + 1))):
            candidates = np.flatnonzero(mask == host)
            if candidates.size < 2:
                break
            centre = int(candidates[rng.integers(candidates.size)])
            cy, cx = divmod(centre, size)
            h, w = rng.integers(smin, smax + 1, size=2)
            y0, x0 = max(cy - h // 2, 0), max(cx - w // 2, 0)
            region = mask[y0 : y0 + h, x0 : x0 + w]
            on_host = region == host
            if on_host.sum() >= candidates.size:
                continue  # would remove the host's last pixel
            region[on_host] = obj
    return mask


def _render(
    rng: np.random.Generator,
    mask: NDArray[np.uint8],
    textures: NDArray[np.float32],
    noise: NDArray[np.float32],
    palette_jitter: float,
    noise_std: float,
) -> NDArray[np.uint8]:
    """Render the RGB image of a class map.

    Args:
        rng: Random generator of this image.
        mask: Class ids [S, S].
        textures: Per-class textures [17, 2S, 2S].
        noise: Standard normal noise [2S, 2S, 3]; each image uses a random crop.
        palette_jitter: Std of the per-image, per-class colour shift (0..255 units).
        noise_std: Maximum std of the per-pixel sensor noise (0..255 units).

    Returns:
        uint8 RGB image [S, S, 3].
    """
    size = mask.shape[0]
    colours = CLASS_COLOURS + rng.normal(0.0, palette_jitter, (NUM_CLASSES, 3)).astype(
        np.float32
    )
    gain = np.float32(rng.uniform(0.8, 1.2))
    sigma = np.float32(rng.uniform(0.3, 1.0) * noise_std)
    ty, tx, ny, nx = rng.integers(0, size + 1, size=4)
    crop = textures[:, ty : ty + size, tx : tx + size]
    tex = np.take_along_axis(crop, mask[None].astype(np.intp), axis=0)[0]
    shade = (1.0 + TEXTURE_AMPLITUDE[mask] * tex) * gain
    image = np.take(colours, mask, axis=0)
    image *= shade[..., None]
    image += noise[ny : ny + size, nx : nx + size] * sigma
    np.clip(image, 0, 255, out=image)
    rendered: NDArray[np.uint8] = image.astype(np.uint8)
    return rendered


def _png_bytes(mask_values: NDArray[np.uint8]) -> bytes:
    """Encode a palette PNG mask.

    Args:
        mask_values: Palette indices [H, W].

    Returns:
        The PNG file content (no timestamps).
    """
    img = Image.fromarray(mask_values)
    img.putpalette([v for colour in MASK_PALETTE for v in colour])
    buffer = io.BytesIO()
    img.save(buffer, format='PNG')
    return buffer.getvalue()


def _tif_bytes(image: NDArray[np.uint8]) -> bytes:
    """Encode an uncompressed RGB TIFF.

    Args:
        image: RGB image [H, W, 3].

    Returns:
        The TIFF file content (no timestamps).
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='TIFF')
    return buffer.getvalue()


def _write_zip(folder: Path, archive: Path) -> None:
    """Zip a folder deterministically (sorted members, fixed timestamps).

    Args:
        folder: The folder to store (its name becomes the top-level member).
        archive: The zip file to write.
    """
    with zipfile.ZipFile(archive, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob('*')):
            if path.is_dir() or path.parent.name == 'splits':
                continue
            info = zipfile.ZipInfo(
                path.relative_to(folder.parent).as_posix(), date_time=_ZIP_DATE
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


def make_synthetic_dlrsd(
    root: PathLike,
    num_images: int = 420,
    image_size: int = 128,
    seed: int = 0,
    zipf_exponent: float = 1.0,
    max_rate: float = 0.4,
    palette_jitter: float = 12.0,
    noise_std: float = 8.0,
    make_archive: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic land-cover archive in the DLRSD layout.

    Writes ``<root>/DLRSD/Images/<scene>/<scene>NN.tif`` (RGB),
    ``<root>/DLRSD/Labels/<scene>/<scene>NN.png`` (palette PNG, values 1..17) and
    ``<root>/DLRSD/multilabels.csv`` (the DLRSD header, labels equal to the classes
    present in each mask) for the 21 UC Merced scene folders, images dealt to the
    scenes in turn. Label rates follow ``max_rate * rank ** -zipf_exponent`` over a fixed
    class ranking (pavement most common, airplane rarest), raised for the classes
    typical of an image's scene; objects always sit on a host class (ship and dock
    on sea or water, airplane and cars on pavement, tanks on bare soil or pavement,
    mobile homes, buildings and courts on land). The same arguments give
    byte-identical files. The folder is assembled next to its destination and moved
    into place at the end, so a reader never sees a half-written archive.

    Args:
        root: Directory to write into.
        num_images: Number of images (at least 1).
        image_size: Side of the square images in pixels (at least 16).
        seed: Random seed.
        zipf_exponent: Exponent of the long-tailed label rates (0: flat).
        max_rate: Base rate in (0, 1] of the most frequent class; scene classes are
            raised to 0.85 in their scenes and co-occurrence rules add hosts, so the
            observed frequencies are higher.
        palette_jitter: Std of the per-image colour shift of every class (0..255).
        noise_std: Maximum std of the per-pixel noise (0..255).
        make_archive: Also write ``<root>/DLRSD.zip`` (deterministic zip).
        overwrite: Replace an existing ``<root>/DLRSD`` folder.

    Returns:
        The archive folder ``<root>/DLRSD``.

    Raises:
        FileExistsError: If ``<root>/DLRSD`` exists and ``overwrite`` is False.
        TypeError: If ``num_images`` or ``image_size`` is not an integer.
        ValueError: If an argument is out of range, or the archive would not fit
            on the disk.
    """
    for name, value in (('num_images', num_images), ('image_size', image_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f'{name} must be an integer, got {value!r}.')
    if num_images < 1:
        raise ValueError(f'num_images must be at least 1, got {num_images}.')
    if image_size < 16:
        raise ValueError(f'image_size must be at least 16, got {image_size}.')
    reals = {
        'zipf_exponent': zipf_exponent,
        'palette_jitter': palette_jitter,
        'noise_std': noise_std,
    }
    for real_name, real in reals.items():
        if not (math.isfinite(real) and real >= 0):
            raise ValueError(
                f'{real_name} must be finite and non-negative, got {real}.'
            )
    if not 0.0 < max_rate <= 1.0:
        raise ValueError(f'max_rate must be in (0, 1], got {max_rate}.')
    # the archive takes about 4 bytes per pixel (RGB image + mask); it is checked
    # before anything is allocated or written
    need = num_images * image_size**2 * 4
    existing = Path(root).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ValueError(
            f'num_images={num_images} images of {image_size} px need about '
            f'{need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB are free on the disk '
            f'of {str(root)!r}.'
        )
    root_path = Path(root)
    target = root_path / 'DLRSD'
    if target.exists() and not overwrite:
        raise FileExistsError(
            f'{str(target)!r} already exists; pass overwrite=True to replace it.'
        )
    root_path.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    scenes = np.arange(num_images, dtype=np.int64) % len(SCENES)
    planned = _sample_labels(rng, scenes, zipf_exponent, max_rate)
    fields = _smooth_fields(rng, 8, 2 * image_size, 6)
    textures = _textures(rng, 2 * image_size)
    noise = rng.standard_normal((2 * image_size, 2 * image_size, 3), dtype=np.float32)
    digits = max(2, len(str((num_images - 1) // len(SCENES))))

    work = Path(tempfile.mkdtemp(prefix='.DLRSD.', dir=root_path))
    try:
        out = work / 'DLRSD'
        for name in SCENES[: min(num_images, len(SCENES))]:
            (out / 'Images' / name).mkdir(parents=True)
            (out / 'Labels' / name).mkdir(parents=True)
        rows = []
        for i in range(num_images):
            scene = SCENES[scenes[i]]
            stem = f'{scene}{i // len(SCENES):0{digits}d}'
            image_rng = np.random.default_rng([seed, i])
            mask = _paint_mask(image_rng, planned[i], image_size, fields)
            image = _render(image_rng, mask, textures, noise, palette_jitter, noise_std)
            (out / 'Images' / scene / f'{stem}.tif').write_bytes(_tif_bytes(image))
            (out / 'Labels' / scene / f'{stem}.png').write_bytes(_png_bytes(mask + 1))
            present = np.bincount(mask.reshape(-1), minlength=NUM_CLASSES) > 0
            rows.append(stem + ',' + ','.join('1' if p else '0' for p in present))
        rows.sort()
        csv_text = ','.join(CSV_HEADER) + '\n' + '\n'.join(rows) + '\n'
        (out / 'multilabels.csv').write_bytes(csv_text.encode())
        if make_archive:
            _write_zip(out, work / 'DLRSD.zip')
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        if make_archive:
            os.replace(work / 'DLRSD.zip', root_path / 'DLRSD.zip')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
