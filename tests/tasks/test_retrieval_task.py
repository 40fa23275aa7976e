import glob
import json
import logging
import math
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader
from torchgeo.main import main as torchgeo_main

from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
from torchgeo_macl.datasets import make_synthetic_dlrsd
from torchgeo_macl.main import main as macl_main
from torchgeo_macl.metrics import RetrievalMetrics
from torchgeo_macl.tasks import RetrievalTask
from torchgeo_macl.tasks.retrieval import LOSS_NAMES
from torchgeo_macl.transforms import labels_from_masks

CONF = Path(__file__).parents[1] / 'conf'
DATA = Path(__file__).parents[1] / 'data'
FOLDERS = {'dlrsd': 'DLRSD', 'mlaid': 'AID_multilabel', 'whdld': 'WHDLD'}


def _copy_data(name: str, tmp_path: Path) -> Path:
    """Copy a fake dataset so that split and label caches land in tmp_path."""
    root = tmp_path / name
    shutil.copytree(DATA / name / FOLDERS[name], root / FOLDERS[name])
    for cache in (root / FOLDERS[name]).glob('splits'):
        shutil.rmtree(cache)
    return root


def _args(name: str, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        '--config',
        str(CONF / f'{name}.yaml'),
        f'--data.init_args.root={root}',
        f'--trainer.default_root_dir={out}',
        *extra,
    ]


@pytest.mark.parametrize('loss', LOSS_NAMES)
@pytest.mark.parametrize('name', sorted(FOLDERS))
def test_fit_validate_test_predict(name: str, loss: str, tmp_path: Path) -> None:
    root = _copy_data(name, tmp_path)
    args = _args(name, root, tmp_path / 'out', f'--model.init_args.loss={loss}')
    torchgeo_main(['fit', *args, '--trainer.max_epochs=1'])
    ckpt = glob.glob(str(tmp_path / 'out' / '**' / 'last.ckpt'), recursive=True)
    assert len(ckpt) == 1
    for command in ('validate', 'test', 'predict'):
        torchgeo_main([command, *args, f'--ckpt_path={ckpt[0]}'])


def test_bare_class_names_through_plugin_cli(tmp_path: Path) -> None:
    root = _copy_data('dlrsd', tmp_path)
    args = [
        '--config',
        str(CONF / 'dlrsd_bare_names.yaml'),
        f'--data.init_args.root={root}',
        f'--trainer.default_root_dir={tmp_path}',
    ]
    assert macl_main(['fit', *args, '--trainer.fast_dev_run=1']) == 0
    assert macl_main(['test', *args, '--trainer.fast_dev_run=1']) == 0


@pytest.fixture
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_dlrsd(root, num_images=48, image_size=32, seed=0)
    return root


def _datamodule(root: Path, **kwargs: Any) -> DLRSDRetrievalDataModule:
    return DLRSDRetrievalDataModule(
        root=str(root), batch_size=8, split_fractions=(0.5, 0.25, 0.25), **kwargs
    )


def _task(**kwargs: Any) -> RetrievalTask:
    defaults: dict[str, Any] = {
        'model': 'resnet18',
        'embed_dim': 8,
        'proj_hidden_dim': 16,
        'ks': (1, 5),
        'monitor': 'val_mAP@5',
    }
    defaults.update(kwargs)
    return RetrievalTask(**defaults)


@pytest.fixture
def make_trainer(quiet_trainer: Callable[..., Trainer]) -> Callable[..., Trainer]:
    """Build deterministic CPU trainers: ``make_trainer(root, epochs, **kwargs)``."""

    def build(out: Path, epochs: int, **kwargs: Any) -> Trainer:
        return quiet_trainer(
            out, max_epochs=epochs, num_sanity_val_steps=0, deterministic=True, **kwargs
        )

    return build


def test_resume_reproduces_uninterrupted_run(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    from lightning.pytorch import seed_everything

    seed_everything(0)
    trainer = make_trainer(tmp_path / 'full', 2)
    trainer.fit(_task(), datamodule=_datamodule(synthetic_root))
    full = {k: float(v) for k, v in trainer.callback_metrics.items()}

    seed_everything(0)
    first = make_trainer(tmp_path / 'part', 1)
    first.fit(_task(), datamodule=_datamodule(synthetic_root))
    ckpt = glob.glob(str(tmp_path / 'part' / '**' / 'last.ckpt'), recursive=True)[0]
    seed_everything(123)  # the checkpoint must restore every random state itself
    second = make_trainer(tmp_path / 'part', 2)
    second.fit(_task(), datamodule=_datamodule(synthetic_root), ckpt_path=ckpt)
    resumed = {k: float(v) for k, v in second.callback_metrics.items()}
    assert 'val_mAP@5' in full
    for key in ('val_mAP@5', 'val_NDCG@5', 'val_rare_mAP@5', 'train_loss'):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key


def test_checkpoint_loads_with_weights_only(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    trainer = make_trainer(tmp_path, 1, limit_train_batches=1)
    trainer.fit(_task(), datamodule=_datamodule(synthetic_root))
    ckpt = glob.glob(str(tmp_path / '**' / 'last.ckpt'), recursive=True)[0]
    data = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert 'rng_states' in data
    task = RetrievalTask.load_from_checkpoint(ckpt, weights_only=True)
    assert task.hparams['num_classes'] == 17
    # normalisation of the training data travels with the checkpoint
    assert torch.allclose(task.input_std, _datamodule(synthetic_root).std.float())


def test_mask_aware_views_label_each_view_from_its_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = _task(mask_aware_views=True, num_classes=3, loss='supcon', image_size=8)
    task._min_pixel_fraction = 0.0
    seen: dict[str, torch.Tensor] = {}
    views: list[torch.Tensor] = []
    original = task.views.forward

    def record(image: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        out = original(image, mask)
        views.append(out[1])
        return out

    def criterion(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen['labels'] = labels
        return features.sum() * 0

    monkeypatch.setattr(task.views, 'forward', record)
    monkeypatch.setattr(task.criterion, 'forward', criterion)
    mask = torch.zeros(6, 32, 32, dtype=torch.long)
    mask[:, :4, :4] = 2  # a small corner that many crops cut out
    mask[:, 16:] = 1
    batch = {
        'image': torch.randn(6, 3, 32, 32),
        'label': torch.tensor([[1, 1, 1]] * 6),
        'mask': mask,
    }
    task.log = lambda *a, **k: None  # type: ignore[method-assign]
    task.training_step(batch, 0)
    labels = seen['labels']
    # each view is an item of its own: [view 1 of every image, view 2 of every image]
    assert labels.shape == (12, 3)
    assert torch.equal(labels[:6], labels_from_masks(views[0], 3))
    assert torch.equal(labels[6:], labels_from_masks(views[1], 3))
    assert labels[:, 1].all()  # the lower half is in every large enough crop
    assert not labels[:, 2].all()  # the small corner is cut out of some crops


def test_weights_from_local_file_and_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _task()
    path = tmp_path / 'backbone.pth'
    torch.save(source.backbone.state_dict(), path)
    task = _task(weights=str(path))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(task.backbone.state_dict()[key], value)

    class FakeWeights:
        def get_state_dict(self, **kwargs: Any) -> dict[str, torch.Tensor]:
            return source.backbone.state_dict()

    from torchgeo_macl.tasks import _weights

    monkeypatch.setattr(_weights, 'get_weight', lambda name: FakeWeights())
    task = _task(weights='ResNet18_Weights.SENTINEL2_RGB_MOCO')
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(task.backbone.state_dict()[key], value)


def test_predict_returns_normalised_embeddings(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    dm = _datamodule(synthetic_root)
    trainer = make_trainer(tmp_path, 1)
    out: Any = trainer.predict(_task(num_classes=17), datamodule=dm)
    emb = torch.cat([o['embedding'] for o in out])
    idx = torch.cat([o['index'] for o in out])
    assert emb.shape == (len(dm.predict_ids), 8)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)
    assert sorted(idx.tolist()) == list(range(len(emb)))


@pytest.mark.parametrize('training', [True, False])
def test_embed_preprocesses_raw_images(training: bool) -> None:
    task = _task(model='test_resnet', num_classes=17)
    task.input_size.fill_(32)
    task.input_mean.copy_(torch.tensor([100.0, 110.0, 120.0]))
    task.input_std.copy_(torch.tensor([50.0, 55.0, 60.0]))
    task.train(training)
    raw = torch.rand(3, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 255
    embeddings = task.embed(raw)
    assert task.training is training
    assert not embeddings.requires_grad
    task.eval()
    with torch.no_grad():
        expected = task(task.preprocess(raw))
        unnormalised = task(raw)
    torch.testing.assert_close(embeddings, expected)
    assert embeddings.shape == (3, 8)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    # forward takes preprocessed batches: raw images give other embeddings
    assert not torch.allclose(unnormalised, expected, atol=1e-3)


def test_aux_segmentation_and_smp_encoder(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    trainer = make_trainer(tmp_path, 1, limit_train_batches=2, limit_val_batches=1)
    task = _task(model='smp:resnet18', aux_seg_weight=0.5, mask_aware_views=True)
    trainer.fit(task, datamodule=_datamodule(synthetic_root))
    assert task.decoder is not None
    assert 'train_seg_loss' in trainer.callback_metrics
    assert torch.isfinite(trainer.callback_metrics['train_loss'])


def test_bad_configurations(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    with pytest.raises(ValueError, match="unknown loss 'triplet'"):
        _task(loss='triplet')
    with pytest.raises(ValueError, match='num_classes=5 but the datamodule'):
        make_trainer(tmp_path, 1).fit(
            _task(num_classes=5), datamodule=_datamodule(synthetic_root)
        )
    with pytest.raises(ValueError, match='in_channels=4 but the datamodule'):
        make_trainer(tmp_path, 1).fit(
            _task(in_channels=4), datamodule=_datamodule(synthetic_root)
        )
    with pytest.raises(
        ValueError, match=r'in_channels=3 but the batch images .*\(4 bands\)'
    ):
        _task()(torch.zeros(2, 4, 16, 16))
    with pytest.raises(ValueError, match='the bce loss takes no loss_kwargs'):
        _task(loss='bce', loss_kwargs={'temperature': 0.1})


def _lr_factors(warmup: int, epochs: int, steps: int) -> list[float]:
    """Learning-rate factors per epoch of the task's schedule."""
    task = _task(warmup_epochs=warmup)
    task._trainer = SimpleNamespace(max_epochs=epochs)  # type: ignore[assignment]
    config = task.configure_optimizers()
    optimizer, scheduler = config['optimizer'], config['lr_scheduler']['scheduler']
    peak = task.hparams['lr']
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]['lr'] / peak)
        optimizer.step()
        scheduler.step()
    return factors


def _reference_factor(epoch: int, warmup: int, epochs: int) -> float:
    """Linear warm-up then cosine, written out."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    progress = min((epoch - warmup) / max(epochs - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def test_scheduler_warmup_then_cosine() -> None:
    f = _lr_factors(2, 10, 11)
    assert f[0] == pytest.approx(1 / 3)
    assert f[1] == pytest.approx(2 / 3)
    assert f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx(0.5)
    assert f[10] == pytest.approx(0.0)


@pytest.mark.parametrize(('warmup', 'epochs'), [(0, 7), (1, 8), (5, 100), (3, 3)])
def test_scheduler_matches_the_written_out_schedule(warmup: int, epochs: int) -> None:
    steps = epochs if warmup < epochs else warmup + 1
    expected = [_reference_factor(e, warmup, epochs) for e in range(steps)]
    assert _lr_factors(warmup, epochs, steps) == pytest.approx(expected, abs=1e-12)


def test_scheduler_follows_trainer_max_epochs(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    trainer = make_trainer(tmp_path, 3, limit_train_batches=1, limit_val_batches=0)
    task = _task(warmup_epochs=1, lr=1.0)
    rates: list[float] = []

    class Record(Callback):
        def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]['lr'])

    trainer.callbacks.append(Record())
    trainer.fit(task, datamodule=_datamodule(synthetic_root))
    assert rates == pytest.approx([_reference_factor(e, 1, 3) for e in range(3)])


def test_batches_are_normalised_once(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_trainer: Callable[..., Trainer],
) -> None:
    import kornia

    calls: list[int] = []
    original = kornia.enhance.normalize

    def count(image: torch.Tensor, *args: Any) -> torch.Tensor:
        calls.append(image.shape[0])
        return original(image, *args)

    monkeypatch.setattr(kornia.enhance, 'normalize', count)
    trainer = make_trainer(tmp_path, 1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(_task(), datamodule=_datamodule(synthetic_root))
    assert calls == [8, 8, 8]  # two training batches, one validation batch


def test_max_epochs_hparam_is_deprecated() -> None:
    with pytest.deprecated_call(match='max_epochs'):
        task = _task(max_epochs=6, warmup_epochs=0)
    task._trainer = SimpleNamespace(max_epochs=50)  # type: ignore[assignment]
    assert task._schedule_epochs() == 6


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
    from torchgeo_macl.tasks import RetrievalTask

    root, out = sys.argv[1], sys.argv[2]
    seed_everything(0)
    dm = DLRSDRetrievalDataModule(root=root, batch_size=8, split_fractions=(0.5, 0.25, 0.25),
                                  sampler='label_aware', sampler_m=2)
    task = RetrievalTask(model='test_resnet', embed_dim=8, proj_hidden_dim=16, ks=(1, 5),
                         monitor='val_mAP@5')
    kw = dict(accelerator='cpu', devices=2, strategy='ddp', logger=False,
              enable_progress_bar=False, enable_model_summary=False)
    trainer = Trainer(max_epochs=1, default_root_dir=out, use_distributed_sampler=False,
                      num_sanity_val_steps=0, **kw)
    trainer.fit(task, datamodule=dm)
    gathered = bool(task.criterion.gather_distributed)
    ckpt = trainer.checkpoint_callback.last_model_path
    tester = Trainer(**kw)
    metrics = tester.test(task, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    if tester.global_rank == 0:
        with open(out + '/result.json', 'w') as f:
            json.dump({'world_size': tester.world_size, 'gathered': gathered,
                       'batches': len(trainer.train_dataloader), 'ckpt': ckpt,
                       'loss': float(trainer.callback_metrics['train_loss']),
                       'metrics': metrics}, f)
    """
)


def test_ddp_fit_and_test_match_single_process(
    synthetic_root: Path,
    run_command: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    script = tmp_path / 'ddp_run.py'
    script.write_text(DDP_SCRIPT)
    run_command(
        [sys.executable, str(script), str(synthetic_root), str(tmp_path)], tmp_path
    )
    result = json.loads((tmp_path / 'result.json').read_text())
    assert result['world_size'] == 2
    assert result['gathered'] is True
    # the label-aware sampler splits the 24 training images' 3 batches between ranks
    assert result['batches'] == 1
    single = Trainer(
        accelerator='cpu', devices=1, logger=False, enable_progress_bar=False
    )
    task = RetrievalTask.load_from_checkpoint(result['ckpt'], weights_only=True)
    dm = DLRSDRetrievalDataModule(
        root=str(synthetic_root), batch_size=8, split_fractions=(0.5, 0.25, 0.25)
    )
    expected = single.test(task, datamodule=dm, verbose=False)[0]
    assert set(expected) == set(result['metrics'])
    for key, value in expected.items():
        assert result['metrics'][key] == pytest.approx(value, abs=1e-6), key


class _ScoredTask(RetrievalTask):
    """A task whose monitored score is best after the first epoch, then falls."""

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log('val_score', 1.0 if self.current_epoch == 0 else 0.0)


def test_last_checkpoint_is_the_final_epoch(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    trainer = make_trainer(tmp_path, 3, limit_train_batches=1)
    task = _ScoredTask(
        model='resnet18',
        embed_dim=8,
        proj_hidden_dim=16,
        ks=(1, 5),
        monitor='val_score',
    )
    trainer.fit(task, datamodule=_datamodule(synthetic_root))
    assert trainer.checkpoint_callback is not None
    best = torch.load(
        trainer.checkpoint_callback.best_model_path,
        map_location='cpu',
        weights_only=True,
    )
    assert best['epoch'] == 0
    (last,) = glob.glob(str(tmp_path / '**' / 'last.ckpt'), recursive=True)
    assert last == trainer.checkpoint_callback.last_model_path
    state = torch.load(last, map_location='cpu', weights_only=True)
    assert state['epoch'] == 2
    assert state['global_step'] == trainer.global_step


def test_user_checkpoint_callback_is_kept(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    mine = ModelCheckpoint(dirpath=tmp_path / 'mine', filename='mine', save_top_k=1)
    trainer = make_trainer(tmp_path, 1, limit_train_batches=1, callbacks=[mine])
    trainer.fit(_task(), datamodule=_datamodule(synthetic_root))
    assert trainer.checkpoint_callbacks == [mine]
    assert (tmp_path / 'mine' / 'mine.ckpt').is_file()
    # with Lightning's default callback only, the task's own two replace it
    trainer = make_trainer(tmp_path / 'default', 1, limit_train_batches=1)
    trainer.fit(_task(), datamodule=_datamodule(synthetic_root))
    (task_checkpoint,) = trainer.checkpoint_callbacks
    assert isinstance(task_checkpoint, ModelCheckpoint)
    assert task_checkpoint.monitor == 'val_mAP@5'
    assert task_checkpoint.last_model_path.endswith('last.ckpt')


def test_cut_offs_beyond_a_small_split_are_evaluated_at_its_size(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    dm = _datamodule(synthetic_root)
    dm.setup('validate')
    n = len(dm.val_dataset)
    assert n <= 20
    trainer = make_trainer(tmp_path, 1, limit_train_batches=1)
    task = _task(ks=(5, 20, 50), monitor='val_mAP@20')
    with pytest.warns(UserWarning, match=f'evaluated at {n - 1}'):
        trainer.fit(task, datamodule=dm)
    metrics = trainer.callback_metrics
    # leave-one-out: every query ranks the n - 1 other images, so k = 20 and k = 50
    # are the same whole ranking
    assert 'val_mAP@20' in metrics
    assert float(metrics['val_mAP@20']) == float(metrics['val_mAP@50'])
    assert float(metrics['val_mAP@5']) != float(metrics['val_mAP@20'])
    assert glob.glob(str(tmp_path / '**' / 'last.ckpt'), recursive=True)


def test_test_results_hold_what_the_test_ranked(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    dm = _datamodule(synthetic_root)
    task = _task()
    assert task.test_results == {}
    trainer = make_trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    logged = trainer.test(task, datamodule=dm, verbose=False)[0]
    results = task.test_results
    for k in (1, 5):
        assert float(results[f'mAP@{k}']) == pytest.approx(logged[f'test_mAP@{k}'])
        per_label = results[f'AP_label@{k}']
        assert per_label.shape == (len(dm.classes),)
        carried = results['label_has_query']
        assert torch.isnan(per_label[~carried]).all()
        assert torch.isfinite(per_label[carried]).all()
    assert int(results['num_queries']) == len(dm.test_dataset)
    assert not any(key.startswith('test_AP_label') for key in logged)
    assert 'test_num_queries' not in logged


class _TwoTestLoaders(DLRSDRetrievalDataModule):
    """A datamodule written for the former test loaders: queries, then database."""

    def test_dataloader(self) -> list[DataLoader[dict[str, torch.Tensor]]]:  # type: ignore[override]
        super().test_dataloader()
        assert self.database_dataset is not None
        return [self._loader(self.test_dataset), self._loader(self.database_dataset)]


def _ranked_directly(
    task: RetrievalTask, dm: DLRSDRetrievalDataModule
) -> dict[str, float]:
    """Embed the queries and the database apart and rank them with the metric."""
    ks = tuple(task.hparams['ks'])
    metric = RetrievalMetrics(ks=ks, leave_one_out=False, per_label=True, clip_ks=True)
    task.eval()
    parts = ((dm.test_dataset, False), (dm.database_dataset, True))
    with torch.no_grad():
        for dataset, database in parts:
            assert dataset is not None
            for batch in dm._loader(dataset):
                batch = dm.on_after_batch_transfer(batch, 0)
                embeddings = task(batch['image'])
                metric.update(embeddings, batch['label'], batch['index'], database)
    return {
        f'test_{name}': float(value)
        for name, value in metric.compute().items()
        if '@' in name and value.numel() == 1
    }


def test_one_test_loader_and_one_result(
    synthetic_root: Path, tmp_path: Path, make_trainer: Callable[..., Trainer]
) -> None:
    dm = _datamodule(synthetic_root)
    task = _task()
    trainer = make_trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    results = trainer.test(task, datamodule=dm, verbose=False)
    assert len(results) == 1
    (logged,) = results
    assert 'test_mAP@5' in logged
    # 12 queries in batches of 8: the second batch holds queries and database items
    assert len(dm.test_dataset) % dm.batch_size != 0
    expected = _ranked_directly(task, dm)
    assert set(logged) == set(expected)
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, abs=1e-6), name
    # a datamodule with the former two test loaders ranks the same
    two = _TwoTestLoaders(
        root=str(synthetic_root), batch_size=8, split_fractions=(0.5, 0.25, 0.25)
    )
    former = trainer.test(task, datamodule=two, verbose=False)
    assert len(former) == 2
    for name, value in expected.items():
        assert former[0][name] == pytest.approx(value, abs=1e-6), name


class _Records(logging.Handler):
    """Keep the messages of Lightning's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_records() -> Iterator[_Records]:
    """The messages Lightning logs during a test (its loggers do not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ('lightning.pytorch', 'lightning.fabric')]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope='module')
def fitted_dlrsd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The DLRSD test archive and the last checkpoint of a one-epoch CLI fit."""
    tmp_path = tmp_path_factory.mktemp('fitted')
    root = _copy_data('dlrsd', tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr('sys.argv', ['torchgeo-macl'])
        args = _args('dlrsd', root, tmp_path / 'fit', '--trainer.max_epochs=1')
        assert macl_main(['fit', *args, '--model.init_args.model=test_resnet']) == 0
    (ckpt,) = (tmp_path / 'fit').glob('**/last.ckpt')
    return root, ckpt


def test_cli_test_prints_one_column_and_no_checkpoint_messages(
    fitted_dlrsd: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lightning_records: _Records,
) -> None:
    args = _args(
        'dlrsd', fitted_dlrsd[0], tmp_path / 'test', f'--ckpt_path={fitted_dlrsd[1]}'
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert macl_main(['test', *args]) == 0
    out = capsys.readouterr().out
    assert 'test_mAP@1' in out
    assert 'DataLoader 0' in out
    assert 'DataLoader 1' not in out
    logged = '\n'.join(lightning_records.messages)
    assert 'configure_callbacks' not in logged
    assert 'override existing callbacks' not in logged
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if 'dirpath' in m or 'ckpt_path' in m], messages
    # nor Lightning's own deprecation warning under recent torch
    assert not [m for m in messages if 'LeafSpec' in m], messages


def test_cli_predict_writes_shards_that_index_reads(
    lightning_records: _Records,
    fitted_dlrsd: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    root, ckpt = fitted_dlrsd
    out = tmp_path / 'predict'
    assert (
        macl_main(['predict', *_args('dlrsd', root, out, f'--ckpt_path={ckpt}')]) == 0
    )
    shards = out / 'predictions'  # logger: false, so default_root_dir/predictions
    assert any(str(shards) in m for m in lightning_records.messages)
    (manifest,) = shards.glob('shard-*.json')
    assert json.loads(manifest.read_text())['checkpoint'] == str(ckpt.resolve())
    index = tmp_path / 'index' / 'dlrsd'
    argv = ['index', '--embeddings', str(shards), '--ckpt', str(ckpt)]
    assert macl_main([*argv, '--out', str(index)]) == 0
    # the default predict split is the database: train + val of the 12 images
    assert 'indexed 9 images' in capsys.readouterr().out


def test_writer_defaults_to_the_log_dir_and_python_predict_writes_nothing(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from torchgeo_macl.search import EmbeddingWriter, read_shards

    dm = _datamodule(synthetic_root)
    task = _task()
    kwargs: dict[str, Any] = {
        'accelerator': 'cpu',
        'enable_progress_bar': False,
        'enable_model_summary': False,
    }
    # from Python, predict returns the embeddings as Lightning's does, writing nothing
    trainer = Trainer(logger=False, default_root_dir=tmp_path / 'plain', **kwargs)
    out: Any = trainer.predict(task, datamodule=dm)
    assert sum(len(o['embedding']) for o in out) == len(dm.predict_ids)
    assert not [cb for cb in trainer.callbacks if isinstance(cb, BasePredictionWriter)]
    assert not (tmp_path / 'plain').exists()
    # a writer without a folder writes into the run's log directory
    writer = EmbeddingWriter()
    logger = CSVLogger(tmp_path / 'logs', name='run', version=3)
    trainer = Trainer(logger=logger, callbacks=[writer], **kwargs)
    trainer.predict(task, datamodule=dm, return_predictions=False)
    assert writer.output_dir == str(
        tmp_path / 'logs' / 'run' / 'version_3' / 'predictions'
    )
    assert read_shards(writer.output_dir).ids == dm.predict_ids


def test_cli_predict_keeps_the_users_writer(
    fitted_dlrsd: tuple[Path, Path], tmp_path: Path
) -> None:
    root, ckpt = fitted_dlrsd
    out = tmp_path / 'predict'
    mine = tmp_path / 'mine'
    args = _args(
        'dlrsd',
        root,
        out,
        f'--ckpt_path={ckpt}',
        '--trainer.callbacks+=torchgeo_macl.search.EmbeddingWriter',
        f'--trainer.callbacks.output_dir={mine}',
    )
    assert macl_main(['predict', *args]) == 0
    assert list(mine.glob('shard-*.json'))
    assert not (out / 'predictions').exists()


@pytest.mark.parametrize('stage', ['validate', 'test'])
def test_no_callbacks_outside_fit_and_predict(
    synthetic_root: Path,
    tmp_path: Path,
    stage: str,
    quiet_trainer: Callable[..., Trainer],
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    getattr(trainer, stage)(
        _task(), datamodule=_datamodule(synthetic_root), verbose=False
    )
    assert not [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert not [cb for cb in trainer.callbacks if isinstance(cb, BasePredictionWriter)]


def test_state_without_input_range_loads_as_eight_bit() -> None:
    task = RetrievalTask(model='test_resnet', embed_dim=8, proj_hidden_dim=16)
    task.input_range.copy_(torch.tensor([0.0, 10000.0]))
    assert not task.eight_bit_input
    state = task.state_dict()
    del state['input_range']  # a checkpoint written before the range was recorded
    task.load_state_dict(state)
    assert task.eight_bit_input
    assert task.input_range.tolist() == [0.0, 255.0]
