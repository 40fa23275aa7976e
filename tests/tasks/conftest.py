from typing import Any

import pytest
import segmentation_models_pytorch as smp
import timm

from torchgeo_macl.tasks import retrieval

_create_model = timm.create_model
_unet = smp.Unet


def _tiny_timm(name: str, *args: Any, **kwargs: Any) -> Any:
    """Create timm's tiny test ResNet whatever model name the config asks for."""
    kwargs['pretrained'] = False
    return _create_model('test_resnet', *args, **kwargs)


def _tiny_unet(*args: Any, **kwargs: Any) -> Any:
    """A U-Net on the tiny timm test ResNet with narrow decoder channels."""
    kwargs['encoder_name'] = 'tu-test_resnet'
    kwargs['decoder_channels'] = (16, 8, 8, 8, 8)
    return _unet(*args, **kwargs)


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval.timm, 'create_model', _tiny_timm)
    monkeypatch.setattr(retrieval.smp, 'Unet', _tiny_unet)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when pytest's own arguments are on sys.argv."""
    monkeypatch.setattr('sys.argv', ['torchgeo'])
