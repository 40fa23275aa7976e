"""Pretrained weights: torchgeo enums' metadata and normalisation, ViTs, offline."""

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import pytest
import timm
import torch
import torchvision.transforms.v2 as T
from lightning.pytorch import Trainer
from torch import Tensor, nn
from torchgeo.models import (
    ResNet18_Weights,
    ResNet50_Weights,
    Swin_V2_B_Weights,
    ViTSmall16_Weights,
)
from torchvision.models._api import Weights, WeightsEnum

from torchgeo_macl.datamodules import TorchGeoRetrievalDataModule
from torchgeo_macl.datamodules.spec import RetrievalDataSpec
from torchgeo_macl.main import main
from torchgeo_macl.tasks import RetrievalTask, _weights
from torchgeo_macl.tasks import retrieval as retrieval_module

BIGEARTHNET = Path(__file__).parents[1] / 'data' / 'bigearthnet'
TINY = {'embed_dim': 8, 'proj_hidden_dim': 16, 'ks': (1, 2), 'monitor': 'val_mAP@1'}


class FakeS2Weights(WeightsEnum):  # type: ignore[misc]
    """12-band weights of a ResNet-18 that normalise reflectances by 10000."""

    RESNET18 = Weights(
        url='https://weights.invalid/resnet18_s2-0123abcd.pth',
        transforms=nn.Sequential(
            T.Resize(256), T.CenterCrop(224), T.Normalize(mean=[0], std=[10000])
        ),
        meta={'model': 'resnet18', 'in_chans': 12},
    )


def _backbone_state(bands: int, name: str = 'resnet18') -> dict[str, Tensor]:
    return retrieval_module.timm.create_model(
        name, in_chans=bands, num_classes=0
    ).state_dict()


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Serve every torchgeo weights download from a fresh model; record each one."""
    calls: list[str] = []

    def get_state_dict(self: Any, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        calls.append(str(self))
        return _backbone_state(int(self.meta['in_chans']), self.meta['model'])

    monkeypatch.setattr(WeightsEnum, 'get_state_dict', get_state_dict)
    monkeypatch.setattr(_weights, 'check_torchgeo_download', lambda weights: None)
    return calls


def test_in_channels_from_the_weights_metadata(downloads: list[str]) -> None:
    task = RetrievalTask(model='resnet18', weights=FakeS2Weights.RESNET18, **TINY)
    assert task.hparams['in_channels'] == 12
    assert task.input_mean.shape == (12,)
    assert next(task.backbone.parameters()).shape[1] == 12
    assert downloads == ['FakeS2Weights.RESNET18']
    assert RetrievalTask(**TINY).hparams['in_channels'] == 3


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        (
            {'weights': FakeS2Weights.RESNET18, 'in_channels': 3},
            r'take 12 input bands \(meta in_chans\) but in_channels=3',
        ),
        (
            {'weights': ViTSmall16_Weights.SENTINEL2_ALL_DINO, 'in_channels': 13},
            (
                r"timm model 'vit_small_patch16_224' but model is 'resnet18'; set "
                r'model: vit_small_patch16_224'
            ),
        ),
        (
            {'weights': 'ViTSmall16_Weights.SENTINEL2_ALL_DINO'},
            r"timm model 'vit_small_patch16_224' but model is 'resnet18'",
        ),
        (
            {'weights': Swin_V2_B_Weights.SENTINEL2_MI_MS_SATLAS, 'model': 'resnet50'},
            r"model 'swin_v2_b', which is not a timm model",
        ),
    ],
)
def test_mismatched_weights_are_refused_before_any_download(
    downloads: list[str], kwargs: dict[str, Any], message: str
) -> None:
    args = {'model': 'resnet18', **TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        RetrievalTask(**args)
    assert downloads == []


def test_vit_weights_embed_images_of_any_size(
    downloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real ViT-S/16, not the tiny stand-in of the other task tests
    monkeypatch.setattr(retrieval_module.timm, 'create_model', timm.models.create_model)
    weights = ViTSmall16_Weights.SENTINEL2_ALL_DINO
    task = RetrievalTask(model='vit_small_patch16_224', weights=weights, **TINY)
    assert task.hparams['in_channels'] == 13
    assert downloads == [str(weights)]
    task.eval()
    with torch.no_grad():
        for size in (32, 48, 224):
            out = task(torch.randn(2, 13, size, size))
            assert out.shape == (2, 8)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    'kwargs',
    [
        {'model': 'vit_small_patch16_224', 'aux_seg_weight': 0.5, 'num_classes': 3},
        {'model': 'smp:tu-vit_small_patch16_224'},
    ],
)
def test_a_vit_as_unet_encoder_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any]
) -> None:
    import segmentation_models_pytorch as smp

    # the real U-Net and ViT, not the tiny stand-ins of the other task tests
    monkeypatch.setattr(retrieval_module.smp, 'Unet', smp.decoders.unet.model.Unet)
    monkeypatch.setattr(retrieval_module.timm, 'create_model', timm.models.create_model)
    with pytest.raises(
        ValueError, match=r'cannot be the encoder of a U-Net .*resnet18'
    ):
        RetrievalTask(**{**TINY, **kwargs})


def test_weights_normalization_composes_the_normalize_steps() -> None:
    class Composed(WeightsEnum):  # type: ignore[misc]
        TWO_STEPS = Weights(
            url='https://weights.invalid/two.pth',
            transforms=nn.Sequential(
                T.Normalize(mean=[0.0], std=[255.0]),
                K.Normalize(
                    mean=torch.tensor([0.485, 0.456, 0.406]),
                    std=torch.tensor([0.229, 0.224, 0.225]),
                ),
            ),
            meta={},
        )

    mean, std = _weights.weights_normalization(Composed.TWO_STEPS, 3) or (None, None)
    assert mean is not None
    assert std is not None
    raw = torch.rand(2, 3, 4, 4) * 255
    expected = Composed.TWO_STEPS.transforms(raw.clone())
    got = (raw - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(got, expected, atol=1e-4)

    mean, std = _weights.weights_normalization(
        ResNet18_Weights.SENTINEL2_ALL_MOCO, 13
    ) or (None, None)
    assert mean is not None
    assert std is not None
    assert torch.equal(mean, torch.zeros(13))
    assert torch.equal(std, torch.full((13,), 10000.0))
    with pytest.raises(ValueError, match='normalise 3 bands but in_channels=5'):
        _weights.weights_normalization(Composed.TWO_STEPS, 5)


def _spec(bands: int) -> RetrievalDataSpec:
    return RetrievalDataSpec(
        num_classes=4,
        mean=tuple(100.0 * (i + 1) for i in range(bands)),
        std=tuple(50.0 * (i + 1) for i in range(bands)),
        image_size=16,
        min_pixel_fraction=0.0,
        has_masks=False,
        label_frequencies=torch.full((4,), 0.25),
        value_min=(0.0,) * bands,
        value_max=(10000.0,) * bands,
    )


def test_batches_reach_the_backbone_in_the_weights_normalization(
    downloads: list[str], tmp_path: Path
) -> None:
    task = RetrievalTask(model='resnet18', weights=FakeS2Weights.RESNET18, **TINY)
    spec = _spec(12)
    task.input_mean.copy_(torch.tensor(spec.mean))
    task.input_std.copy_(torch.tensor(spec.std))
    task._map_to_weights_normalization(spec)
    seen: list[Tensor] = []
    task.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    raw = torch.rand(2, 12, 16, 16) * 10000
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    task.eval()
    with torch.no_grad():
        first = task((raw - mean) / std)
    assert torch.allclose(seen[0], raw / 10000, atol=1e-5)

    # the map is part of the checkpoint: a task loaded without the weights embeds
    # files as the trained one does
    path = tmp_path / 'task.pt'
    torch.save(task.state_dict(), path)
    loaded = RetrievalTask(model='resnet18', in_channels=12, num_classes=4, **TINY)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    loaded.eval()
    assert torch.allclose(loaded.embed(raw), task.embed(raw), atol=1e-6)
    assert torch.allclose(task.embed(raw), first, atol=1e-6)

    # without torchgeo weights the datamodule's normalisation is what the backbone sees
    plain = RetrievalTask(model='resnet18', in_channels=12, **TINY)
    seen.clear()
    plain.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    plain.eval()
    with torch.no_grad():
        plain((raw - mean) / std)
    assert torch.equal(seen[0], (raw - mean) / std)


def test_fit_on_bigearthnet_with_multispectral_weights(
    downloads: list[str], tmp_path: Path, quiet_trainer: Any
) -> None:
    root = tmp_path / 'bigearthnet'
    shutil.copytree(BIGEARTHNET / 'BigEarthNet-v1.0', root / 'BigEarthNet-v1.0')
    for split in ('train', 'val', 'test'):
        shutil.copy(BIGEARTHNET / f'bigearthnet-{split}.csv', root)
    dm = TorchGeoRetrievalDataModule(
        'BigEarthNetDataModule',
        root=str(root),
        bands='s2',
        num_classes=19,
        batch_size=2,
        image_size=16,
    )
    # 12-band weights whose bands are BigEarthNet's, in its order (B01-B08, B8A,
    # B09, B11, B12); they divide reflectances by 10000
    weights = ResNet50_Weights.SENTINEL2_ALL_SECO_ECO
    task = RetrievalTask(model='resnet50', weights=weights, **TINY)
    assert task.hparams['in_channels'] == 12
    seen: list[Tensor] = []
    task.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    trainer: Trainer = quiet_trainer(tmp_path / 'out', max_epochs=1)
    trainer.fit(task, datamodule=dm)
    assert task._renormalize
    # BigEarthNet's datamodule normalises min-max; the backbone sees reflectance/10000
    spec = dm.retrieval_spec('fit')
    scale = torch.tensor(spec.std) / 10000
    shift = torch.tensor(spec.mean) / 10000
    assert torch.allclose(task.input_scale, scale)
    assert torch.allclose(task.input_shift, shift)
    assert all(torch.isfinite(x).all() for x in seen)


def test_weights_normalization_can_be_left_out_and_warns_on_other_units(
    downloads: list[str],
) -> None:
    spec = _spec(12)
    task = RetrievalTask(
        model='resnet18',
        weights=FakeS2Weights.RESNET18,
        use_weights_normalization=False,
        loss='bce',  # no loss to place on the devices: no trainer needed
        **TINY,
    )
    task._use_spec(spec, 'Fake', 'fit')
    assert not task._renormalize
    task = RetrievalTask(model='resnet18', weights=FakeS2Weights.RESNET18, **TINY)
    eight_bit = RetrievalDataSpec(
        num_classes=4, mean=(100.0,) * 12, std=(50.0,) * 12, value_max=(255.0,)
    )
    with pytest.warns(UserWarning, match='probably in other units'):
        task._map_to_weights_normalization(eight_bit)


def test_views_jitter_multispectral_bands_each_on_its_own() -> None:
    from torchgeo_macl.transforms.views import NormalizedColorJitter

    jitter = NormalizedColorJitter(0.4, p=1.0)
    jitter.set_normalization(
        torch.zeros(12),
        torch.ones(12),
        torch.full((12,), -50.0),
        torch.full((12,), 50.0),
    )
    image = torch.randn(3, 12, 8, 8)
    torch.manual_seed(0)
    out = jitter(image)
    # no band is mixed into another: changing band 5 changes band 5 only
    changed = image.clone()
    changed[:, 5] += 3.0
    torch.manual_seed(0)
    out_changed = jitter(changed)
    others = [i for i in range(12) if i != 5]
    assert torch.allclose(out_changed[:, others], out[:, others], atol=1e-5)
    assert not torch.allclose(out_changed[:, 5], out[:, 5])
    # each band draws its own brightness and contrast
    centred = out - out.mean((2, 3), keepdim=True)
    ratio = centred.std((2, 3)) / (image - image.mean((2, 3), keepdim=True)).std((2, 3))
    assert (ratio.std(dim=1) > 1e-3).all()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, int]]:
    """No network, empty weight caches; record every connection attempt."""
    attempts: list[tuple[str, int]] = []

    def refuse(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise OSError('[Errno -2] Name or service not known')

    monkeypatch.setattr(_weights.socket, 'create_connection', refuse)
    for name in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    torch_hub = tmp_path / 'torch-hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(torch_hub))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
    return attempts


def test_offline_timm_weights_fail_at_once(offline: list[tuple[str, int]]) -> None:
    start = time.perf_counter()
    with pytest.raises(
        ConnectionError,
        match=r'cannot download the timm weights of resnet18 from https://huggingface.co/timm/',
    ):
        RetrievalTask(model='resnet18', weights=True, **TINY)
    assert time.perf_counter() - start < 5
    assert offline == [('huggingface.co', 443)]


def test_offline_torchgeo_weights_fail_at_once(
    offline: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        WeightsEnum,
        'get_state_dict',
        lambda self, *a, **k: calls.append(str(self)) or _backbone_state(12),
    )
    cache = _weights.hub_cache_path(FakeS2Weights.RESNET18.url)
    with pytest.raises(
        ConnectionError,
        match=r'weights\.invalid/resnet18_s2-0123abcd\.pth.*put the file at',
    ) as info:
        RetrievalTask(model='resnet18', weights=FakeS2Weights.RESNET18, **TINY)
    assert cache in str(info.value)
    assert calls == []
    # a cached file needs no network
    Path(cache).parent.mkdir(parents=True)
    Path(cache).touch()
    RetrievalTask(model='resnet18', weights=FakeS2Weights.RESNET18, **TINY)
    assert calls == ['FakeS2Weights.RESNET18']
    assert offline == [('weights.invalid', 443)]


def test_a_proxy_is_checked_instead_of_the_host(
    offline: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv('https_proxy', 'http://proxy.example:3128')
    reason = _weights._unreachable('https://huggingface.co/timm/resnet18.a1_in1k')
    assert reason is not None
    assert 'proxy.example:3128' in reason
    assert offline == [('proxy.example', 3128)]


@pytest.mark.parametrize('from_file', [True, False])
def test_offline_cli_reports_one_line(
    offline: list[tuple[str, int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    from_file: bool,
) -> None:
    conf = Path(__file__).parents[1] / 'conf' / 'dlrsd.yaml'
    pretrained = tmp_path / 'pretrained.yaml'
    pretrained.write_text('model:\n  init_args:\n    weights: true\n')
    weights = (
        ['--config', str(pretrained)]
        if from_file
        else ['--model.init_args.weights=true']
    )
    code = main(
        [
            'fit',
            '--config',
            str(conf),
            *weights,
            f'--trainer.default_root_dir={tmp_path}',
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1
    assert err[0].startswith(
        'torchgeo-macl fit: error: cannot download the timm weights'
    )
