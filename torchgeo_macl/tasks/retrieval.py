"""Lightning task for multi-label contrastive image retrieval."""

from __future__ import annotations

import difflib
import inspect
import math
import os
import random
import urllib.error
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from torchgeo_macl._compat import (
    BaseTask,
    WeightsEnum,
    extract_backbone,
    load_state_dict,
)
from torchgeo_macl.datamodules.spec import RetrievalDataSpec
from torchgeo_macl.losses import LOSSES, ContrastiveLossBase, get_loss
from torchgeo_macl.metrics import RetrievalMetrics
from torchgeo_macl.transforms import ContrastiveViews, labels_from_masks
from torchgeo_macl.transforms.preprocess import normalize, resize

from . import _weights

#: Loss names accepted by :class:`RetrievalTask`: the registered losses, the default
#: first, and ``bce``, the classifier baseline.
LOSS_NAMES = ('macl', *sorted(LOSSES.keys() - {'macl'}), 'bce')


#: Length of the cosine schedule when the trainer sets no epoch limit (``max_steps``).
_DEFAULT_SCHEDULE_EPOCHS = 100


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int
) -> LRScheduler:
    """Linear warm-up, then cosine decay to zero at ``max_epochs``; stepped per epoch.

    Epoch ``e < warmup_epochs`` runs at ``(e + 1) / (warmup_epochs + 1)`` of the peak
    rate; from ``warmup_epochs`` on, the rate follows a half cosine from the peak to 0
    over ``max(max_epochs - warmup_epochs, 1)`` epochs.

    Args:
        optimizer: The optimizer, at its peak learning rate.
        warmup_epochs: Epochs of linear warm-up.
        max_epochs: Epoch at which the cosine reaches zero.

    Returns:
        The scheduler.
    """
    cosine = CosineAnnealingLR(optimizer, T_max=max(max_epochs - warmup_epochs, 1))
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(
        optimizer, start_factor=1 / (warmup_epochs + 1), total_iters=warmup_epochs
    )
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


class _BestAndLastCheckpoint(ModelCheckpoint):
    """The best checkpoint by the monitored metric, and ``last.ckpt`` every epoch.

    Lightning 2.6 writes ``last.ckpt`` only in an epoch that also wrote a top-k
    checkpoint; this callback writes it after every epoch, so ``ckpt_path=last``
    resumes from the latest state.
    """

    def _save_last_every_epoch(self, trainer: Trainer) -> None:
        # skipped when this step already saved (then last.ckpt is current)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the top-k checkpoint (at train epoch end) and ``last.ckpt``.

        Args:
            trainer: The trainer.
            pl_module: The module being trained.
        """
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the top-k checkpoint (after validation) and ``last.ckpt``.

        Args:
            trainer: The trainer.
            pl_module: The module being trained.
        """
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)


def _is_default_checkpoint(callback: ModelCheckpoint) -> bool:
    """Whether a checkpoint callback is the one Lightning adds by default."""
    default = ModelCheckpoint()
    return type(callback) is ModelCheckpoint and all(
        getattr(callback, name) == getattr(default, name)
        for name in ('monitor', 'dirpath', 'filename', 'save_top_k', 'save_last')
    )


def _drop_own_checkpoint_state(checkpoint: dict[str, Any]) -> None:
    """Remove the state of :class:`_BestAndLastCheckpoint` from a loaded checkpoint.

    Args:
        checkpoint: The checkpoint dictionary, changed in place.
    """
    states = checkpoint.get('callbacks')
    if not isinstance(states, dict):
        return
    own = f'{_BestAndLastCheckpoint.__qualname__}{{'
    for key in [k for k in states if isinstance(k, str) and k.startswith(own)]:
        del states[key]


def _usable_frequencies(freqs: Tensor) -> Tensor:
    """Give labels that never occur in the training split a small positive frequency.

    Args:
        freqs: Label frequencies of the training split, in [0, 1].

    Returns:
        The frequencies, with zeros replaced by half the smallest positive one.

    Raises:
        ValueError: If no label occurs at all.
    """
    present = freqs > 0
    if not present.any():
        raise ValueError('no label occurs in the training split')
    if present.all():
        return freqs
    missing = (~present).nonzero().flatten().tolist()
    warnings.warn(
        f'labels {missing} never occur in the training split; their frequency is set '
        'to half the smallest observed one for the loss',
        UserWarning,
        stacklevel=3,
    )
    return torch.where(present, freqs, freqs[present].min() / 2)


def _check_loss_kwargs(loss: str, loss_kwargs: dict[str, Any] | None) -> None:
    """Check that a loss accepts its keyword arguments, by building it once.

    Args:
        loss: A name of :data:`LOSS_NAMES`.
        loss_kwargs: Keyword arguments of the loss.

    Raises:
        ValueError: If the loss does not take one of the arguments or rejects a value.
    """
    kwargs = dict(loss_kwargs or {})
    if loss == 'bce':
        if kwargs:
            raise ValueError(f'the bce loss takes no loss_kwargs, got {kwargs}')
        return
    cls = LOSSES[loss]
    parameters = inspect.signature(cls).parameters
    accepted = [
        name
        for name, p in parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(
            f'loss_kwargs {unknown} are not arguments of the {loss} loss '
            f'({cls.__name__}); it accepts {", ".join(accepted)}'
        )
    try:
        get_loss(loss, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'invalid loss_kwargs for the {loss} loss: {exc}') from exc


def _check_model_name(model: str) -> None:
    """Check that a backbone name is known to timm or segmentation-models-pytorch.

    Args:
        model: A timm model name, or ``smp:<encoder>``. Names with another source
            prefix (``hf-hub:...``) are resolved by timm when the model is built.

    Raises:
        ValueError: If the model or encoder name is unknown.
    """
    if model.startswith('smp:'):
        encoder = model[len('smp:') :]
        if encoder.startswith('tu-'):
            known = timm.is_model(encoder[len('tu-') :])
        else:
            known = encoder in smp.encoders.get_encoder_names()
        if not known:
            raise ValueError(
                f'unknown segmentation-models-pytorch encoder {encoder!r} in model '
                f'{model!r}'
            )
        return
    if ':' in model or timm.is_model(model):
        return
    close = difflib.get_close_matches(model, timm.list_models(), n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown timm model {model!r}{hint}')


#: timm modules whose models embed images of any size (``dynamic_img_size``).
_DYNAMIC_SIZE_MODULES = ('timm.models.vision_transformer', 'timm.models.eva')


def _timm_kwargs(name: str) -> dict[str, Any]:
    """Extra arguments of a timm backbone: ViTs embed images of any size.

    Args:
        name: The timm model name.

    Returns:
        ``{'dynamic_img_size': True}`` for ViT-style models (their position
        embedding is interpolated to the image's patch grid), else nothing.
    """
    try:
        module = timm.models.model_entrypoint(name).__module__
    except RuntimeError:  # a source prefix (hf-hub:...) is resolved by timm later
        return {}
    return {'dynamic_img_size': True} if module in _DYNAMIC_SIZE_MODULES else {}


class RetrievalTask(BaseTask):  # type: ignore[misc]
    """Contrastive (or BCE) training of an image embedding for multi-label retrieval.

    Each training batch (normalised by the datamodule) is turned into two random views
    per image on the device (:class:`~torchgeo_macl.transforms.ContrastiveViews`),
    embedded by a backbone and a projection head, and scored by a contrastive loss from
    :mod:`torchgeo_macl.losses` (MACL by default) that receives the train split's label
    frequencies from the datamodule. Validation ranks the validation split against
    itself (leave-one-out); testing ranks the test split (queries) against the train +
    val split (database). Retrieval metrics are logged as ``val_mAP@20``,
    ``test_NDCG@50``, ... and ``*_rare_mAP@k``; ``predict_step`` returns L2-normalised
    embeddings with their dataset indexes, for :mod:`torchgeo_macl.search`.

    Attributes:
        test_results: Everything the test metric returned at the end of the last
            test (:class:`~torchgeo_macl.metrics.RetrievalMetrics` with
            ``per_label=True``): the logged scalars and the per-label mAP@k, on the
            CPU. Empty before the first test.
    """

    ignore = ('weights',)
    monitor = 'val_mAP@20'
    mode = 'max'

    def __init__(
        self,
        model: str = 'resnet18',
        weights: WeightsEnum | bool | str | None = None,
        in_channels: int | None = None,
        use_weights_normalization: bool = True,
        num_classes: int | None = None,
        embed_dim: int = 128,
        proj_hidden_dim: int = 512,
        loss: str = 'macl',
        loss_kwargs: dict[str, Any] | None = None,
        image_size: int | None = None,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        color_jitter: float = 0.4,
        blur: float = 0.0,
        mask_aware_views: bool = False,
        min_pixel_fraction: float | None = None,
        aux_seg_weight: float = 0.0,
        freeze_backbone: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: int = 1,
        max_epochs: int | None = None,
        ks: Sequence[int] = (10, 20, 50, 100),
        monitor: str = 'val_mAP@20',
    ) -> None:
        """Initialise a new RetrievalTask.

        Args:
            model: A `timm <https://huggingface.co/docs/timm>`__ model name, or
                ``smp:<encoder>`` for a segmentation-models-pytorch encoder.
            weights: Initial backbone weights: None/False for random weights, True
                for the timm (ImageNet) weights, a torchgeo weights enum or its name,
                or the path of a Lightning checkpoint or state dict. A torchgeo
                enum must be for the timm model ``model`` (its ``meta['model']``);
                its ``meta['in_chans']`` gives ``in_channels``, and its
                normalisation (the ``Normalize`` steps of its ``transforms``) is
                what the backbone sees: batches normalised otherwise by the
                datamodule are mapped onto it (see :meth:`setup`). Weights that
                are neither cached nor reachable are refused before any download.
            in_channels: Number of input bands; None takes the weights'
                ``in_chans`` (3 without torchgeo weights).
            use_weights_normalization: Map batches onto the normalisation of
                torchgeo ``weights`` (else the backbone sees the datamodule's).
            num_classes: Number of labels; None takes it from the datamodule.
            embed_dim: Dimension of the retrieval embedding.
            proj_hidden_dim: Hidden width of the projection head.
            loss: A name of :data:`LOSS_NAMES`: a loss registered in
                :mod:`torchgeo_macl.losses`, or ``bce``.
            loss_kwargs: Keyword arguments of the loss (see
                :func:`torchgeo_macl.losses.get_loss`); ``validate_args`` is False
                unless given, so that the loss never waits for the device.
            image_size: Side of the training views; None keeps the batch's size.
            crop_scale: Area range of the random resized crop.
            hflip: Random horizontal flips.
            vflip: Random vertical flips.
            rot90: Random rotations by multiples of 90 degrees.
            color_jitter: Colour-jitter strength (0 = off).
            blur: Probability of Gaussian blur (0 = off).
            mask_aware_views: Recompute each view's labels from its cropped mask
                (datasets with masks only). Each view then enters the loss as an item
                of its own, so the two views of an image are positives of each other
                only when their cropped labels overlap (no effect with ``ntxent``).
            min_pixel_fraction: Pixel fraction for mask-aware labels; None takes the
                datamodule's.
            aux_seg_weight: Weight of an auxiliary segmentation loss from a U-Net
                decoder on the shared encoder (datasets with masks; 0 = off).
            freeze_backbone: Train only the projection head (and classifier).
            lr: Peak learning rate of AdamW.
            weight_decay: AdamW weight decay.
            warmup_epochs: Epochs of linear warm-up before the cosine decay, which
                reaches zero at the trainer's ``max_epochs``.
            max_epochs: Deprecated: the schedule follows the trainer's
                ``max_epochs``. When given, it sets the schedule's length instead.
            ks: Retrieval cut-offs.
            monitor: Metric for checkpointing (maximised).

        Raises:
            ValueError: If the loss name, a loss keyword argument, the model name,
                the weights name or a setting is invalid, or torchgeo weights are
                for another model or another number of bands.
            FileNotFoundError: If ``weights`` names a checkpoint or state-dict file
                (``.ckpt``, ``.pt``, ``.pth``) that does not exist.
            ConnectionError: If pretrained weights must be downloaded and their
                source cannot be reached.
        """
        if loss not in LOSS_NAMES:
            raise ValueError(
                f'unknown loss {loss!r}; choose one of {", ".join(LOSS_NAMES)}'
            )
        _check_loss_kwargs(loss, loss_kwargs)
        _check_model_name(model)
        enum = _weights.weights_enum(weights)
        if enum is not None:
            in_channels = _weights.check_weights_fit(enum, model, in_channels)
        elif in_channels is None:
            in_channels = 3
        sizes = {
            'in_channels': in_channels,
            'num_classes': num_classes,
            'embed_dim': embed_dim,
            'proj_hidden_dim': proj_hidden_dim,
            'image_size': image_size,
        }
        for name, value in sizes.items():
            if value is not None and value < 1:
                optional = ' or None' if name in ('num_classes', 'image_size') else ''
                raise ValueError(f'{name} must be >= 1{optional}, got {value}')
        if aux_seg_weight < 0:
            raise ValueError(f'aux_seg_weight must be >= 0, got {aux_seg_weight}')
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f'lr must be finite and > 0, got {lr}')
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(
                f'weight_decay must be finite and >= 0, got {weight_decay}'
            )
        if not ks or min(ks) < 1:
            raise ValueError(f'ks must be positive cut-offs, got {ks}')
        if warmup_epochs < 0 or (max_epochs is not None and max_epochs < 1):
            raise ValueError(
                f'need warmup_epochs >= 0 and max_epochs >= 1, got {warmup_epochs}, '
                f'{max_epochs}'
            )
        if max_epochs is not None:
            warnings.warn(
                'RetrievalTask(max_epochs=...) is deprecated and will be removed in '
                "the next release: the learning-rate schedule follows the trainer's "
                'max_epochs',
                DeprecationWarning,
                stacklevel=2,
            )
        self.weights = weights
        #: the torchgeo weights enum that ``weights`` names, if any
        self._weights_enum = enum
        self._in_channels = in_channels
        #: (mean, std) the pretrained backbone expects of images in stored units
        self._weights_normalization = (
            None if enum is None else _weights.weights_normalization(enum, in_channels)
        )
        super().__init__()
        self.monitor = monitor

    # ------------------------------------------------------------------ models
    @property
    def _uses_unet(self) -> bool:
        return str(self.hparams['model']).startswith('smp:') or (
            self.hparams['aux_seg_weight'] > 0
        )

    def configure_models(self) -> None:
        """Build the backbone, projection head and (when needed) heads."""
        hp = self.hparams
        # None in the arguments: the weights' bands (recorded in the checkpoint)
        hp['in_channels'] = self._in_channels
        name: str = hp['model']
        self.decoder: nn.Module | None = None
        self.seg_head: nn.Module | None = None
        self.classifier: nn.Module | None = None
        if self._uses_unet:
            unet = self._unet(max(int(hp['num_classes'] or 1), 1))
            self.backbone: nn.Module = unet.encoder
            num_features = int(unet.encoder.out_channels[-1])
            if hp['aux_seg_weight'] > 0 and hp['num_classes'] is not None:
                self.decoder = unet.decoder
                self.seg_head = unet.segmentation_head
        else:
            if self.weights is True:
                _weights.check_timm_download(name)
            self.backbone = timm.create_model(
                name,
                in_chans=hp['in_channels'],
                num_classes=0,
                pretrained=self.weights is True,
                **_timm_kwargs(name),
            )
            num_features = int(getattr(self.backbone, 'num_features'))  # noqa: B009
        self._load_weights()
        # Input preprocessing of the training data, saved with the checkpoint so that
        # images from files can be embedded the same way (see :meth:`preprocess`).
        bands = int(hp['in_channels'])
        self.input_mean: Tensor
        self.input_std: Tensor
        self.input_size: Tensor
        self.register_buffer('input_mean', torch.zeros(bands))
        self.register_buffer('input_std', torch.full((bands,), 255.0))
        self.register_buffer('input_size', torch.zeros((), dtype=torch.long))
        # lowest and highest valid value of the training images (8-bit: 0, 255)
        self.input_range: Tensor
        self.register_buffer('input_range', torch.tensor([0.0, 255.0]))
        # per-band map from the datamodule's normalisation onto the one the
        # pretrained weights expect (identity without torchgeo weights)
        self.input_scale: Tensor
        self.input_shift: Tensor
        self.register_buffer('input_scale', torch.ones(bands))
        self.register_buffer('input_shift', torch.zeros(bands))
        self._renormalize = False
        self.projection = nn.Sequential(
            nn.Linear(num_features, hp['proj_hidden_dim']),
            nn.BatchNorm1d(hp['proj_hidden_dim']),
            nn.ReLU(inplace=True),
            nn.Linear(hp['proj_hidden_dim'], hp['embed_dim']),
        )
        if hp['loss'] == 'bce' and hp['num_classes'] is not None:
            self.classifier = nn.Linear(hp['embed_dim'], hp['num_classes'])
        if hp['freeze_backbone']:
            for p in self.backbone.parameters():
                p.requires_grad = False
        self.views = ContrastiveViews(
            size=hp['image_size'],
            crop_scale=tuple(hp['crop_scale']),  # type: ignore[arg-type]
            hflip=hp['hflip'],
            vflip=hp['vflip'],
            rot90=hp['rot90'],
            color_jitter=hp['color_jitter'],
            blur=hp['blur'],
        )

    def _load_weights(self) -> None:
        weights = self.weights
        if not weights or weights is True:
            return
        if isinstance(weights, str) and os.path.exists(weights):
            state_dict = self._read_checkpoint(weights)
        else:
            enum = self._weights_enum
            if enum is None:
                raise ValueError(f'unsupported weights: {weights!r}')
            _weights.check_torchgeo_download(enum)
            try:
                state_dict = enum.get_state_dict(progress=True)
            except urllib.error.URLError as exc:
                raise ConnectionError(
                    f'cannot download the weights {enum} from '
                    f'{getattr(enum, "url", "?")}: {exc.reason}'
                ) from exc
        target = self.backbone
        if self._uses_unet:
            target = getattr(self.backbone, 'model', self.backbone)
        load_state_dict(target, dict(state_dict))

    @staticmethod
    def _read_checkpoint(path: str) -> dict[str, Tensor]:
        data = torch.load(path, map_location='cpu', weights_only=True)
        if isinstance(data, dict) and 'state_dict' in data:
            hparams = data.get('hyper_parameters', {})
            if 'model' in hparams and any(
                k.startswith('backbone.') for k in data['state_dict']
            ):
                return {
                    k[len('backbone.') :]: v
                    for k, v in data['state_dict'].items()
                    if k.startswith('backbone.')
                }
            _, state_dict = extract_backbone(path)
            return dict(state_dict)
        if isinstance(data, dict):
            return {str(k): v for k, v in data.items()}
        raise ValueError(f'{path} is neither a Lightning checkpoint nor a state dict')

    def configure_losses(self) -> None:
        """Build the loss criterion."""
        hp = self.hparams
        kwargs = dict(hp['loss_kwargs'] or {})
        if hp['loss'] == 'bce':
            if kwargs:
                raise ValueError(f'the bce loss takes no loss_kwargs, got {kwargs}')
            self.criterion: ContrastiveLossBase | None = None
        else:
            self.criterion = get_loss(hp['loss'], **{'validate_args': False, **kwargs})

    def configure_metrics(self) -> None:
        """Build the retrieval metrics of validation and test."""
        ks = tuple(int(k) for k in self.hparams['ks'])
        self.test_results: dict[str, Tensor] = {}
        self.val_metrics = RetrievalMetrics(ks=ks, leave_one_out=True, clip_ks=True)
        self.test_metrics = RetrievalMetrics(
            ks=ks, leave_one_out=False, per_label=True, clip_ks=True
        )

    # ------------------------------------------------------------------ setup
    @property
    def eight_bit_input(self) -> bool:
        """Whether the task was trained on 8-bit images (values 0..255).

        Image files for such a task must be 8-bit: wider pixels would be read in
        other units than the training images.
        """
        return float(self.input_range[1]) <= 255.0

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # checkpoints written before the input range was recorded hold 8-bit data
        state_dict.setdefault(f'{prefix}input_range', torch.tensor([0.0, 255.0]))
        # and before the map onto the pretrained weights' normalisation
        state_dict.setdefault(f'{prefix}input_scale', torch.ones_like(self.input_scale))
        state_dict.setdefault(
            f'{prefix}input_shift', torch.zeros_like(self.input_shift)
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._renormalize = not (
            bool((self.input_scale == 1).all()) and bool((self.input_shift == 0).all())
        )

    def setup(self, stage: str) -> None:
        """Take the data's description from the datamodule's ``retrieval_spec``.

        The number of labels, the normalisation and image size (kept in buffers for
        :meth:`preprocess` and given to the views), the mask settings and, when
        fitting, the label frequencies of the loss come from one
        :class:`~torchgeo_macl.datamodules.RetrievalDataSpec`. A datamodule without
        ``retrieval_spec`` leaves the task's own settings as they are.

        Args:
            stage: Lightning stage.

        Raises:
            ValueError: If ``num_classes`` or ``in_channels`` disagrees with the
                datamodule, or mask-based settings meet a datamodule without masks.
        """
        dm = getattr(self.trainer, 'datamodule', None) if self._trainer else None
        describe = getattr(dm, 'retrieval_spec', None)
        if describe is None:
            return
        spec: RetrievalDataSpec = describe(stage)
        self._use_spec(spec, type(dm).__name__, stage)

    def _use_spec(
        self, spec: RetrievalDataSpec, source: str, stage: str = 'fit'
    ) -> None:
        """Adopt a datamodule's description of its batches.

        Outside fitting, a task that already has an image size (trained) keeps
        its preprocessing: a datamodule that resizes to another size or
        normalises otherwise would give embeddings unlike those of training, and
        is refused.

        Args:
            spec: The description.
            source: Name of the datamodule, for error messages.
            stage: Lightning stage.

        Raises:
            ValueError: If ``num_classes`` or ``in_channels`` disagrees with the
                spec, the preprocessing disagrees outside fitting, or mask-based
                settings meet a datamodule without masks.
        """
        hp = self.hparams
        if stage != 'fit' and int(self.input_size) > 0:
            self._check_preprocessing(spec, source)
        if hp['num_classes'] is None:
            hp['num_classes'] = spec.num_classes
            self._build_heads()
        elif int(hp['num_classes']) != spec.num_classes:
            raise ValueError(
                f'num_classes={hp["num_classes"]} but the datamodule {source} has '
                f'{spec.num_classes} labels'
            )
        if hp['min_pixel_fraction'] is None:
            self._min_pixel_fraction = spec.min_pixel_fraction
        else:
            self._min_pixel_fraction = float(hp['min_pixel_fraction'])
        bands = self.input_mean.shape[0]
        if len(spec.mean) not in (1, bands):
            raise ValueError(
                f'in_channels={bands} but the datamodule {source} normalises '
                f'{len(spec.mean)} bands'
            )
        self.input_mean.copy_(torch.tensor(spec.mean).expand(bands))
        self.input_std.copy_(torch.tensor(spec.std).expand(bands))
        self.input_size.fill_(spec.image_size or 0)
        self.views.set_normalization(
            self.input_mean, self.input_std, spec.value_min, spec.value_max
        )
        self.input_range.copy_(torch.tensor([min(spec.value_min), max(spec.value_max)]))
        if (
            stage == 'fit'
            and self._weights_normalization is not None
            and hp['use_weights_normalization']
        ):
            self._map_to_weights_normalization(spec)
        setter = getattr(self.criterion, 'set_label_frequencies', None)
        if spec.label_frequencies is not None and setter is not None:
            setter(_usable_frequencies(spec.label_frequencies.float()))
        if (
            self.criterion is not None
            and hasattr(self.criterion, 'gather_distributed')
            and self.trainer.world_size > 1
        ):
            # negatives come from the global batch, as in the single-process run
            setattr(self.criterion, 'gather_distributed', True)  # noqa: B010
        if (hp['mask_aware_views'] or hp['aux_seg_weight'] > 0) and not spec.has_masks:
            raise ValueError(
                f'mask_aware_views and aux_seg_weight need masks, but {source} '
                'provides none'
            )

    def _map_to_weights_normalization(self, spec: RetrievalDataSpec) -> None:
        """Map the datamodule's normalisation onto the pretrained weights'.

        A batch normalised as ``x = (raw - m) / s`` by the datamodule reaches the
        backbone as ``(raw - m_w) / s_w``, the normalisation of the torchgeo
        weights: ``x * s / s_w + (m - m_w) / s_w``, per band. The map is saved
        with the checkpoint.

        Args:
            spec: The datamodule's description of its batches.
        """
        assert self._weights_normalization is not None
        weights_mean, weights_std = self._weights_normalization
        bands = self.input_scale.shape[0]
        mean = torch.tensor(spec.mean).expand(bands)
        std = torch.tensor(spec.std).expand(bands)
        span = (torch.tensor(spec.value_max) - torch.tensor(spec.value_min)).expand(
            bands
        )
        normalised = float((span / weights_std).max())
        if not 0.05 <= normalised <= 100:
            warnings.warn(
                f'the weights {self.weights} normalise with std '
                f"{weights_std.tolist()}, so the data's values "
                f'{list(spec.value_min)}..{list(spec.value_max)} span at most '
                f'{normalised:.3g} after it: the data are probably in other units '
                'than the weights were trained on (use_weights_normalization=False '
                "keeps the datamodule's normalisation)",
                UserWarning,
                stacklevel=2,
            )
        self.input_scale.copy_(std / weights_std)
        self.input_shift.copy_((mean - weights_mean) / weights_std)
        self._renormalize = True

    def _check_preprocessing(self, spec: RetrievalDataSpec, source: str) -> None:
        """Refuse a datamodule that preprocesses otherwise than the trained task.

        Args:
            spec: The datamodule's description of its batches.
            source: Name of the datamodule, for error messages.

        Raises:
            ValueError: If the image size or the normalisation differs.
        """
        size = int(self.input_size)
        if spec.image_size != size:
            given = (
                f'{spec.image_size} px'
                if spec.image_size
                else 'their stored size (image_size=None)'
            )
            raise ValueError(
                f'the task embeds images at {size} px but the datamodule '
                f'{source} resizes them to {given}; set its image_size to {size}'
            )
        mean = self.input_mean.cpu()
        std = self.input_std.cpu()
        if not (
            torch.allclose(torch.tensor(spec.mean).expand_as(mean), mean)
            and torch.allclose(torch.tensor(spec.std).expand_as(std), std)
        ):
            raise ValueError(
                f'the task normalises with mean {mean.tolist()} and std '
                f'{std.tolist()} but the datamodule {source} with mean '
                f'{list(spec.mean)} and std {list(spec.std)}'
            )

    def _unet(self, classes: int) -> smp.Unet:
        """A segmentation-models-pytorch U-Net on the task's backbone.

        Args:
            classes: Output classes of its segmentation head.

        Returns:
            The U-Net (random weights).

        Raises:
            ValueError: If the backbone cannot be a U-Net encoder (a ViT, whose
                features have one scale).
        """
        hp = self.hparams
        name = str(hp['model'])
        encoder = name.removeprefix('smp:') if name.startswith('smp:') else f'tu-{name}'
        try:
            unet = smp.Unet(
                encoder_name=encoder,
                encoder_weights=None,
                in_channels=hp['in_channels'],
                classes=classes,
            )
        except ValueError as exc:
            raise ValueError(
                f'model {name!r} cannot be the encoder of a U-Net ({exc}), which '
                'smp: models and aux_seg_weight > 0 need; use a convolutional '
                'backbone such as resnet18, or aux_seg_weight: 0'
            ) from exc
        return unet

    def _build_heads(self) -> None:
        """Create the heads that need ``num_classes`` once it is known."""
        hp = self.hparams
        device = next(self.projection.parameters()).device
        if hp['loss'] == 'bce' and self.classifier is None:
            self.classifier = nn.Linear(hp['embed_dim'], hp['num_classes']).to(device)
        if hp['aux_seg_weight'] > 0 and self.decoder is None:
            unet = self._unet(int(hp['num_classes']))
            self.decoder = unet.decoder.to(device)
            self.seg_head = unet.segmentation_head.to(device)

    # ------------------------------------------------------------------ forward
    def preprocess(self, image: Tensor) -> Tensor:
        """Resize and normalise raw images as the training datamodule did.

        Args:
            image: Images ``[B, C, H, W]`` in 0..255.

        Returns:
            Images resized to the training size (when one was set) and normalised
            with the training data's mean and standard deviation.
        """
        self._check_input(image)
        image = image.float()
        size = int(self.input_size)
        if size > 0:
            image, _ = resize(image, (size, size))
        return normalize(image, self.input_mean, self.input_std)

    def _check_input(self, image: Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.hparams['in_channels']:
            raise ValueError(
                f'in_channels={self.hparams["in_channels"]} but the batch images have '
                f'shape {tuple(image.shape)} ({image.shape[1] if image.ndim == 4 else "?"} '
                'bands)'
            )

    def _features(self, image: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        if self._renormalize:
            scale = self.input_scale.to(image.dtype)[None, :, None, None]
            shift = self.input_shift.to(image.dtype)[None, :, None, None]
            image = image * scale + shift
        if self._uses_unet:
            maps: list[Tensor] = list(self.backbone(image))
            pooled = F.adaptive_avg_pool2d(maps[-1], 1).flatten(1)
            return pooled, maps
        return self.backbone(image), None

    def forward(self, image: Tensor) -> Tensor:
        """Embed preprocessed images.

        ``forward`` takes batches as the datamodule delivers them to the task:
        already resized and normalised (see :meth:`preprocess`). Raw images in
        0..255 go through :meth:`embed`, which preprocesses them first; given to
        ``forward`` directly, they are embedded without normalisation.

        Args:
            image: Preprocessed images ``[B, C, H, W]``.

        Returns:
            L2-normalised embeddings ``[B, embed_dim]``.
        """
        self._check_input(image)
        pooled, _ = self._features(image)
        return F.normalize(self.projection(pooled), dim=-1)

    def embed(self, images: Tensor) -> Tensor:
        """Embed raw images with the task's own preprocessing.

        The images are resized and normalised by :meth:`preprocess` (the image
        size, mean and standard deviation stored in the checkpoint), then embedded
        by :meth:`forward` in eval mode without gradients; the task's train or
        eval mode is the same afterwards.

        Args:
            images: Raw images ``[B, C, H, W]`` in 0..255, of any size, on the
                task's device.

        Returns:
            L2-normalised embeddings ``[B, embed_dim]``.

        Raises:
            ValueError: If the images do not have ``in_channels`` bands.
        """
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                embeddings: Tensor = self(self.preprocess(images))
                return embeddings
        finally:
            self.train(training)

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss on two random views of every image.

        Args:
            batch: Batch with 'image', 'label' and optionally 'mask'.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The loss.

        Raises:
            ValueError: If the labels do not match ``num_classes``.
        """
        hp = self.hparams
        image: Tensor = batch['image']
        labels: Tensor = batch['label']
        self._check_input(image)
        if hp['num_classes'] is not None and labels.shape[-1] != hp['num_classes']:
            raise ValueError(
                f'num_classes={hp["num_classes"]} but the batch labels have '
                f'{labels.shape[-1]} columns'
            )
        mask: Tensor | None = batch.get('mask')
        use_mask = mask is not None and (
            hp['mask_aware_views'] or hp['aux_seg_weight'] > 0
        )
        b = image.shape[0]
        v1, m1 = self.views(image, mask if use_mask else None)
        v2, m2 = self.views(image, mask if use_mask else None)
        views = torch.cat([v1, v2])
        pooled, maps = self._features(views)
        z = self.projection(pooled)
        if hp['mask_aware_views'] and m1 is not None and m2 is not None:
            view_labels = labels_from_masks(
                torch.cat([m1, m2]), labels.shape[-1], self._min_pixel_fraction
            )
        else:
            view_labels = torch.cat([labels, labels])
        if self.criterion is None:
            assert self.classifier is not None
            logits = self.classifier(z)
            loss = F.binary_cross_entropy_with_logits(logits, view_labels.float())
        else:
            if hp['mask_aware_views'] and self.criterion.uses_labels:
                # every view is an item of its own, labelled by its own crop: two views
                # of one image are positives when their cropped labels overlap
                loss = self.criterion(z.unsqueeze(1), view_labels)
            else:
                loss = self.criterion(z.reshape(2, b, -1).transpose(0, 1), labels)
        if (
            hp['aux_seg_weight'] > 0
            and maps is not None
            and m1 is not None
            and m2 is not None
        ):
            assert self.decoder is not None
            assert self.seg_head is not None
            seg_logits = self.seg_head(self.decoder(maps))
            seg_loss = F.cross_entropy(seg_logits, torch.cat([m1, m2]))
            self.log('train_seg_loss', seg_loss, batch_size=b)
            loss = loss + hp['aux_seg_weight'] * seg_loss
        with torch.no_grad():
            spread = F.normalize(z.detach().float(), dim=-1).std(dim=0).mean()
        self.log('train_loss', loss, batch_size=b, prog_bar=True)
        self.log('train_embedding_std', spread, batch_size=b)
        return loss

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Embed a validation batch for leave-one-out retrieval.

        Args:
            batch: Batch with 'image', 'label' and 'index'.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        self.val_metrics.update(
            self(batch['image']), batch['label'], batch.get('index')
        )

    def on_validation_epoch_end(self) -> None:
        """Rank the validation split against itself and log the metrics."""
        self._log_metrics(self.val_metrics, 'val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Embed a test batch of queries and database items.

        The datamodule's test loader marks every sample with ``'database'`` (False
        for a query, True for a database item; a batch may hold both). A batch
        without ``'database'`` comes from a datamodule with two test loaders:
        dataloader 0 holds the queries, dataloader 1 the database.

        Args:
            batch: Batch with 'image', 'label', 'index' and 'database'.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader (only read without
                'database': 1 for the database).
        """
        embeddings = self(batch['image'])
        labels = batch['label']
        indexes = batch.get('index')
        if 'database' not in batch:
            self.test_metrics.update(
                embeddings, labels, indexes, database=dataloader_idx == 1
            )
            return
        in_database = torch.as_tensor(batch['database'], device=embeddings.device)
        in_database = in_database.bool().reshape(-1)
        for database, rows in ((False, ~in_database), (True, in_database)):
            if bool(rows.any()):
                self.test_metrics.update(
                    embeddings[rows],
                    labels[rows],
                    None if indexes is None else indexes[rows],
                    database=database,
                )

    def on_test_epoch_end(self) -> None:
        """Rank test queries against the database and log the metrics."""
        self._log_metrics(self.test_metrics, 'test')

    def _log_metrics(self, metric: RetrievalMetrics, prefix: str) -> None:
        """Compute, log and reset a retrieval metric.

        Every scalar the metric returns is logged; after testing, everything it
        returns (per-label values included) is kept in :attr:`test_results`.

        Args:
            metric: The metric holding the epoch's embeddings.
            prefix: ``'val'`` or ``'test'``.
        """
        if not metric.update_called:
            return
        if metric.num_retrievable() < 1:
            metric.reset()
            return
        try:
            with warnings.catch_warnings():
                if self.trainer.sanity_checking:
                    warnings.simplefilter('ignore', UserWarning)
                values = metric.compute()
        finally:
            metric.reset()
        self.log_dict(
            {
                f'{prefix}_{name}': value
                for name, value in values.items()
                if '@' in name and value.numel() == 1
            },
            sync_dist=False,
        )
        if prefix == 'test':
            self.test_results = {
                name: value.detach().cpu() for name, value in values.items()
            }

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Embed a batch for indexing.

        Args:
            batch: Batch with 'image' and optionally 'index' and 'label'.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            'embedding' (L2-normalised), and 'index' / 'label' when the batch has them.
        """
        out = {'embedding': self(batch['image'])}
        for key in ('index', 'label'):
            if key in batch:
                out[key] = batch[key]
        return out

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        """AdamW with linear warm-up and cosine decay, stepped per epoch.

        Returns:
            Optimizer and learning-rate scheduler.
        """
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = AdamW(params, lr=hp['lr'], weight_decay=hp['weight_decay'])
        scheduler = warmup_cosine_schedule(
            optimizer, hp['warmup_epochs'], self._schedule_epochs()
        )
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'interval': 'epoch'},
        }

    def _schedule_epochs(self) -> int:
        """Length of the cosine schedule: the trainer's ``max_epochs``.

        Returns:
            The deprecated ``max_epochs`` hyperparameter when set, else the
            trainer's ``max_epochs``, else (no trainer, or a run limited by
            ``max_steps``) 100 epochs.
        """
        if self.hparams.get('max_epochs') is not None:
            return int(self.hparams['max_epochs'])
        epochs = getattr(self._trainer, 'max_epochs', None)
        if epochs is None or epochs < 1:
            return _DEFAULT_SCHEDULE_EPOCHS
        return int(epochs)

    def configure_callbacks(self) -> list[Callback]:
        """Checkpoints of the best and of the latest epoch when fitting.

        The best checkpoint follows the monitored retrieval metric (maximised);
        ``last.ckpt`` is written after every epoch, whether or not it improved, so
        that ``ckpt_path=last`` resumes from the latest state. When the trainer
        already has a :class:`~lightning.pytorch.callbacks.ModelCheckpoint` other
        than Lightning's default one, the user's callbacks are kept as they are.
        Validating, testing and predicting add no callbacks (``torchgeo-macl
        predict`` adds an :class:`~torchgeo_macl.search.EmbeddingWriter` itself).

        Returns:
            The callbacks to add to the trainer's.
        """
        trainer = self._trainer
        stage = None if trainer is None else trainer.state.fn
        if stage is not None and stage != 'fit':
            return []
        if trainer is not None and any(
            isinstance(cb, ModelCheckpoint) and not _is_default_checkpoint(cb)
            for cb in getattr(trainer, 'callbacks', [])
        ):
            return []
        return [
            _BestAndLastCheckpoint(
                monitor=self.monitor, mode=self.mode, save_last=True, save_top_k=1
            )
        ]

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random states the views and samplers draw from.

        Args:
            checkpoint: Checkpoint being written.
        """
        state: Any = np.random.get_state(legacy=True)
        _, keys, pos, has_gauss, cached = state
        version, internal, gauss = random.getstate()
        # Plain tensors and numbers only, so the checkpoint loads with weights_only=True
        checkpoint['rng_states'] = {
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            'numpy': [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            'python': [version, torch.tensor(internal, dtype=torch.int64), gauss],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random states saved by :meth:`on_save_checkpoint`.

        Outside fitting, the random states are not restored, and the state of the
        task's own checkpoint callback is left out of the checkpoint being loaded:
        that callback only runs when fitting (:meth:`configure_callbacks`), and
        Lightning would otherwise ask for it.

        Args:
            checkpoint: Checkpoint being loaded.
        """
        hp = checkpoint.get('hyper_parameters', {})
        if (
            self.hparams.get('num_classes') is None
            and hp.get('num_classes') is not None
        ):
            self.hparams['num_classes'] = hp['num_classes']
            self._build_heads()
        states = checkpoint.get('rng_states')
        fitting = self._trainer is not None and self.trainer.state.fn == 'fit'
        if not fitting:
            _drop_own_checkpoint_state(checkpoint)
        if not states or not fitting:
            return
        torch.set_rng_state(states['torch'])
        if states['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states['cuda'])
        keys, pos, has_gauss, cached = states['numpy']
        np.random.set_state(
            (
                'MT19937',
                keys.numpy().astype(np.uint32),
                int(pos),
                int(has_gauss),
                float(cached),
            )
        )
        version, internal, gauss = states['python']
        random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
