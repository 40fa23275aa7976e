import pytest
import torch

from torchgeo_macl.transforms import ContrastiveViews, labels_from_masks
from torchgeo_macl.transforms.views import NormalizedColorJitter


def test_labels_from_masks_exact_counts() -> None:
    mask = torch.zeros(2, 10, 10, dtype=torch.long)
    mask[0, :5] = 1  # rows 0-4: class 1; rows 5-9: 50 pixels of class 0
    mask[0, 0, 0] = 2  # 1 pixel of class 2, leaving 49 of class 1
    mask[1] = 3
    expected = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 1]])
    assert torch.equal(labels_from_masks(mask, 4), expected)
    # 1% threshold keeps the single pixel (1/100), 2% drops it
    assert torch.equal(labels_from_masks(mask, 4, 0.01), expected)
    assert torch.equal(
        labels_from_masks(mask, 4, 0.02), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]])
    )
    assert torch.equal(
        labels_from_masks(mask, 4, 0.5), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]])
    )


def test_labels_from_masks_errors() -> None:
    with pytest.raises(ValueError, match='class id 4'):
        labels_from_masks(torch.full((1, 2, 2), 4), 4)
    with pytest.raises(ValueError, match=r'\[B, H, W\]'):
        labels_from_masks(torch.zeros(2, 2, dtype=torch.long), 4)
    with pytest.raises(ValueError, match='min_pixel_fraction'):
        labels_from_masks(torch.zeros(1, 2, 2, dtype=torch.long), 4, 1.5)


def test_views_differ_per_image_and_view() -> None:
    torch.manual_seed(0)
    views = ContrastiveViews(size=16)
    image = torch.randn(1, 3, 32, 32).expand(6, -1, -1, -1).contiguous()
    a, _ = views(image)
    b, _ = views(image)
    assert a.shape == (6, 3, 16, 16)
    assert not torch.allclose(a, b)
    # same input image, different random parameters per batch element
    assert not torch.allclose(a[0], a[1])


def test_mask_follows_geometry_with_nearest_resampling() -> None:
    torch.manual_seed(0)
    views = ContrastiveViews(size=24, color_jitter=0.0)
    image = torch.zeros(8, 3, 48, 48)
    mask = torch.zeros(8, 48, 48, dtype=torch.long)
    image[:, :, :, 24:] = 1.0
    mask[:, :, 24:] = 3
    view, view_mask = views(image, mask)
    assert view_mask is not None
    assert set(view_mask.unique().tolist()) <= {0, 3}
    # geometry is shared: where the mask says 3 the image is 1 (up to interpolation)
    inside = view_mask == 3
    assert view[:, 0][inside].mean() > 0.9
    assert view[:, 0][~inside].mean() < 0.1


def test_crop_that_cuts_a_label_out_drops_it() -> None:
    torch.manual_seed(0)
    # the crop covers at most 10% of the image, the label sits in one corner pixel block
    views = ContrastiveViews(size=8, crop_scale=(0.05, 0.1), color_jitter=0.0)
    mask = torch.zeros(64, 40, 40, dtype=torch.long)
    mask[:, :4, :4] = 1
    _, view_mask = views(torch.zeros(64, 3, 40, 40), mask)
    assert view_mask is not None
    labels = labels_from_masks(view_mask, 2)
    assert labels[:, 0].all()
    assert 0 < labels[:, 1].sum() < 64


def test_photometric_keeps_normalisation() -> None:
    torch.manual_seed(0)
    views = ContrastiveViews(size=16, color_jitter=0.4, blur=0.5)
    views.set_normalization(
        torch.tensor([100.0, 110.0, 120.0]), torch.tensor([50.0] * 3)
    )
    raw = torch.rand(16, 3, 16, 16) * 255
    normalised = (raw - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)) / 50.0
    view, _ = views(normalised)
    restored = view * 50.0 + torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)
    assert restored.min() >= -1e-3
    assert restored.max() <= 255 + 1e-3
    assert torch.isfinite(view).all()


def test_multispectral_images() -> None:
    views = ContrastiveViews(size=8)
    view, _ = views(torch.randn(2, 5, 16, 16))
    assert view.shape == (2, 5, 8, 8)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match='crop_scale'):
        ContrastiveViews(crop_scale=(0.8, 0.5))
    with pytest.raises(ValueError, match='blur'):
        ContrastiveViews(blur=2.0)
    with pytest.raises(ValueError, match='mask shape'):
        ContrastiveViews()(
            torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long)
        )


MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255


def _normalise(unit: torch.Tensor) -> torch.Tensor:
    return (unit * 255 - MEAN[:, None, None]) / STD[:, None, None]


@pytest.mark.parametrize('order', [[0, 1, 2, 3], [2, 1, 0, 3], [1, 2, 0, 3]])
def test_jitter_in_normalised_space_is_kornias_on_unit_images(order: list[int]) -> None:
    from kornia import enhance

    from torchgeo_macl.transforms.views import NormalizedColorJitter

    jitter = NormalizedColorJitter(0.4)
    jitter.set_normalization(MEAN, STD)
    unit = torch.rand(4, 3, 8, 8) * 0.2 + 0.4  # no clamping at these factors
    factors = torch.tensor([[1.1, 0.9, 1.2, 0.0]] * 4)
    m, t = jitter.colour_maps(_normalise(unit).mean((2, 3)), factors, order)
    out = torch.einsum('bij,bjhw->bihw', m, _normalise(unit)) + t[..., None, None]
    steps = {
        0: enhance.adjust_brightness_accumulative,
        1: enhance.adjust_contrast_with_mean_subtraction,
        2: enhance.adjust_saturation_with_gray_subtraction,
    }
    expected = unit
    for step in order:
        if step in steps:
            expected = steps[step](expected, factors[:, step])
    torch.testing.assert_close(out, _normalise(expected), atol=1e-5, rtol=0)


def test_jitter_statistics_match_kornia_colour_jitter() -> None:
    import kornia.augmentation as K

    torch.manual_seed(1)
    base = torch.rand(2000, 3, 1, 1) * 0.8
    unit = (base + 0.1 * torch.rand(2000, 3, 8, 8)).clamp(0, 1)
    views = ContrastiveViews(size=8, crop_scale=(1.0, 1.0), color_jitter=0.4)
    views.set_normalization(MEAN, STD)
    ours = views.jitter(_normalise(unit)) * STD[:, None, None] + MEAN[:, None, None]
    ours = ours / 255
    theirs = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)(unit)
    for out in (ours, theirs):
        assert out.min() >= -1e-5
        assert out.max() <= 1 + 1e-5
    change = [(out - unit).abs().mean() for out in (ours, theirs)]
    assert change[0] == pytest.approx(float(change[1]), rel=0.05)
    chroma = [(out - out.mean(1, keepdim=True)).abs().mean() for out in (ours, theirs)]
    assert chroma[0] == pytest.approx(float(chroma[1]), rel=0.05)


def test_views_never_denormalise(monkeypatch: pytest.MonkeyPatch) -> None:
    import kornia

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError('the views de-normalised or normalised a batch')

    monkeypatch.setattr(kornia.enhance, 'denormalize', fail)
    monkeypatch.setattr(kornia.enhance, 'normalize', fail)
    views = ContrastiveViews(size=8, color_jitter=0.4, blur=0.5)
    views.set_normalization(MEAN, STD)
    view, _ = views(_normalise(torch.rand(4, 3, 16, 16)))
    low = (-MEAN / STD).view(1, 3, 1, 1)
    high = ((255 - MEAN) / STD).view(1, 3, 1, 1)
    assert (view >= low - 1e-4).all()
    assert (view <= high + 1e-4).all()


def test_jitter_keeps_images_of_other_units_in_their_range() -> None:
    # 12 bands of reflectance normalised with min-max statistics (TorchGeo's
    # BigEarthNet convention): valid values map to 0..1
    torch.manual_seed(0)
    low = torch.linspace(0.0, 1100.0, 12)
    span = torch.full((12,), 9000.0)
    jitter = NormalizedColorJitter(0.4, p=1.0)
    jitter.set_normalization(low, span, low, low + span)
    image = torch.rand(8, 12, 16, 16)
    out = jitter(image)
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    # brightness and contrast change the images but do not crush them
    assert float(out.std()) > 0.1
    assert float((out - image).abs().mean()) < 0.3
