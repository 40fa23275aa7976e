"""Pretrained backbone weights: what they fit, how they normalise, where they come from.

TorchGeo weights enums describe their backbone in ``meta`` (``model``, ``in_chans``)
and their input normalisation in ``transforms``; both are read here without
downloading anything, so that a mismatch is an error before any download. Before a
download starts, the source is checked to be reachable, so that an offline machine
fails at once with a message instead of after the download library's retries.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from typing import Any

import kornia.augmentation as K
import timm
import torch
import torchvision.transforms as T
import torchvision.transforms.v2 as T2
from torch import Tensor, nn

from torchgeo_macl._compat import WeightsEnum, get_weight

#: Seconds to wait for the download host before refusing to download.
CONNECT_TIMEOUT = 5.0


def weights_enum(weights: WeightsEnum | str | bool | None) -> Any | None:
    """The TorchGeo weights that ``weights`` names, if it names any.

    Args:
        weights: The ``weights`` argument of the task.

    Returns:
        The weights enum member for an enum or the name of one; None for no
        weights, ``True`` (timm's weights) and the path of an existing file.

    Raises:
        FileNotFoundError: If a checkpoint or state-dict path (``.ckpt``, ``.pt``,
            ``.pth`` or a name with a folder) does not exist.
        ValueError: If a name is neither an existing file nor TorchGeo weights.
    """
    if isinstance(weights, WeightsEnum):
        return weights
    if not isinstance(weights, str) or os.path.exists(weights):
        return None
    if weights.lower().endswith(('.ckpt', '.pt', '.pth')) or os.sep in weights:
        raise FileNotFoundError(f'weights file not found: {weights}')
    try:
        return get_weight(weights)
    except ValueError as exc:
        raise ValueError(
            f'weights {weights!r} is neither an existing file nor the name of '
            f'torchgeo weights: {exc}'
        ) from exc


def backbone_name(model: str) -> str:
    """The timm (or smp) name of a task's backbone.

    Args:
        model: The task's ``model``: a timm name, ``smp:<encoder>`` or
            ``smp:tu-<timm name>``.

    Returns:
        The name without the ``smp:`` and ``tu-`` prefixes.
    """
    model = model.removeprefix('smp:')
    model = model.removeprefix('tu-')
    return model


def check_weights_fit(weights: Any, model: str, in_channels: int | None) -> int:
    """Check that TorchGeo weights fit the backbone, and give its input bands.

    Args:
        weights: A TorchGeo weights enum member (``meta`` may lack ``model`` or
            ``in_chans``; then that part is not checked).
        model: The task's ``model``.
        in_channels: The task's ``in_channels``; None takes the weights'.

    Returns:
        The number of input bands: ``in_channels``, else the weights' ``in_chans``,
        else 3.

    Raises:
        ValueError: If the weights are for another model, for a model that is not
            a timm model, or for another number of bands.
    """
    meta = getattr(weights, 'meta', None) or {}
    expected = meta.get('model')
    name = str(weights)
    if expected is not None:
        if not timm.is_model(expected):
            raise ValueError(
                f'weights {name} are for the model {expected!r}, which is not a '
                'timm model; RetrievalTask builds timm backbones (or smp encoders), '
                'so choose weights of a timm model such as resnet50 or '
                'vit_small_patch16_224'
            )
        if backbone_name(model) != expected:
            raise ValueError(
                f'weights {name} are for the timm model {expected!r} but model is '
                f'{model!r}; set model: {expected}'
            )
    bands = meta.get('in_chans')
    if bands is not None and in_channels is not None and int(bands) != in_channels:
        raise ValueError(
            f'weights {name} take {bands} input bands (meta in_chans) but '
            f'in_channels={in_channels}; set in_channels: {bands} or leave it unset'
        )
    if in_channels is not None:
        return int(in_channels)
    return int(bands) if bands is not None else 3


def _normalize_step(module: nn.Module) -> tuple[Any, Any] | None:
    """The ``(mean, std)`` of a normalisation transform, None for other modules."""
    if isinstance(module, K.Normalize):
        return module.flags['mean'], module.flags['std']
    if isinstance(module, (T.Normalize, T2.Normalize)):
        return module.mean, module.std
    return None


def weights_normalization(weights: Any, bands: int) -> tuple[Tensor, Tensor] | None:
    """The normalisation that TorchGeo weights expect of their input.

    The ``Normalize`` steps (torchvision's or kornia's) of the weights'
    ``transforms`` are composed into one ``(mean, std)``: the weights see
    ``(x - mean) / std`` of an image ``x`` in its stored units. Resizing and
    cropping steps are not part of it (the task's ``image_size`` sets the size).

    Args:
        weights: A TorchGeo weights enum member.
        bands: Number of input bands.

    Returns:
        ``(mean, std)``, each ``[bands]``, or None when the transforms hold no
        normalisation.

    Raises:
        ValueError: If a normalisation step has neither one value nor one per band.
    """
    transforms = getattr(weights, 'transforms', None)
    if not isinstance(transforms, nn.Module):
        return None
    mean = torch.zeros(bands)
    std = torch.ones(bands)
    found = False
    for module in transforms.modules():
        pair = _normalize_step(module)
        if pair is None:
            continue
        step = []
        for given in pair:
            value = torch.as_tensor(given).float().flatten()
            if value.numel() not in (1, bands):
                raise ValueError(
                    f'weights {weights} normalise {value.numel()} bands but '
                    f'in_channels={bands}'
                )
            step.append(value.expand(bands))
        # (((x - m0) / s0) - m1) / s1 = (x - (m0 + m1 s0)) / (s0 s1)
        mean = mean + step[0] * std
        std = std * step[1]
        found = True
    return (mean, std) if found else None


def _unreachable(url: str) -> str | None:
    """Why the host of a URL cannot be reached, or None when it can.

    A configured HTTPS proxy is checked instead of the host.

    Args:
        url: The download URL.

    Returns:
        The reason, or None.
    """
    proxy = urllib.request.getproxies().get('https')
    parsed = urllib.parse.urlparse(proxy or url)
    host = parsed.hostname
    if host is None:
        return None
    port = parsed.port or (443 if parsed.scheme == 'https' else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return f'{host}:{port} cannot be reached ({exc})'


def hub_cache_path(url: str) -> str:
    """Where :func:`torch.hub.load_state_dict_from_url` keeps a downloaded file.

    Args:
        url: The file's URL.

    Returns:
        The path in the torch hub cache.
    """
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), 'checkpoints', filename)


def check_torchgeo_download(weights: Any) -> None:
    """Refuse at once to download TorchGeo weights from a source out of reach.

    Args:
        weights: A TorchGeo weights enum member.

    Raises:
        ConnectionError: If the weights are not in the torch hub cache and their
            host cannot be reached.
    """
    url = getattr(weights, 'url', None)
    if not isinstance(url, str) or os.path.exists(hub_cache_path(url)):
        return
    reason = _unreachable(url)
    if reason is not None:
        raise ConnectionError(
            f'cannot download the weights {weights} from {url}: {reason}; '
            f'offline, put the file at {hub_cache_path(url)} or set weights to the '
            'path of a local state dict'
        )


def _timm_cached(cfg: Any) -> bool:
    """Whether timm's pretrained weights of a configuration are cached locally."""
    url = getattr(cfg, 'url', None)
    if isinstance(url, str) and url and os.path.exists(hub_cache_path(url)):
        return True
    repo = getattr(cfg, 'hf_hub_id', None)
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache

    files = [getattr(cfg, 'hf_hub_filename', None)]
    files += ['model.safetensors', 'open_clip_pytorch_model.bin', 'pytorch_model.bin']
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in files if f)


def check_timm_download(model: str) -> None:
    """Refuse at once to download timm's weights of a model out of reach.

    Args:
        model: The timm model name.

    Raises:
        ValueError: If timm has no pretrained weights for the model.
        ConnectionError: If the weights are not cached and their source cannot be
            reached (or the Hugging Face Hub is set to offline mode).
    """
    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is None:
        raise ValueError(f'timm has no pretrained weights for {model!r}')
    if _timm_cached(cfg):
        return
    repo = getattr(cfg, 'hf_hub_id', None)
    if repo:
        from huggingface_hub import constants

        url = f'{constants.ENDPOINT}/{repo}'
        reason = 'the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE)'
        if not constants.HF_HUB_OFFLINE:
            reason = _unreachable(url) or ''
    else:
        url = str(getattr(cfg, 'url', '') or '')
        reason = (_unreachable(url) or '') if url else 'timm names no source'
    if reason:
        raise ConnectionError(
            f'cannot download the timm weights of {model} from {url}: {reason}; '
            'offline, set weights to the path of a local state dict (or put the '
            "weights in timm's cache)"
        )
