import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from torchgeo_macl.losses import MACLLoss, get_loss
from torchgeo_macl.main import main as cli_main

CONFIGS = Path(__file__).resolve().parents[2] / 'experiments' / 'configs'
DATASETS = ('dlrsd', 'mlaid', 'mlaid150', 'synthetic', 'whdld')
LOSSES = ('macl', 'supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent', 'bce')
DATAMODULES = {
    'dlrsd': 'torchgeo_macl.datamodules.DLRSDRetrievalDataModule',
    'mlaid': 'torchgeo_macl.datamodules.MLAIDRetrievalDataModule',
    'mlaid150': 'torchgeo_macl.datamodules.MLAIDRetrievalDataModule',
    'synthetic': 'torchgeo_macl.datamodules.DLRSDRetrievalDataModule',
    'whdld': 'torchgeo_macl.datamodules.WHDLDRetrievalDataModule',
}


# ----------------------------------------------------------------- configs
def test_every_dataset_and_loss_has_a_config(run_script: ModuleType) -> None:
    assert run_script.available_datasets(CONFIGS) == list(DATASETS)
    assert tuple(run_script.LOSSES) == LOSSES
    for dataset in DATASETS:
        assert sorted(p.stem for p in (CONFIGS / dataset).glob('*.yaml')) == ['base']
    names = sorted(p.stem for p in (CONFIGS / 'losses').glob('*.yaml'))
    assert names == sorted(LOSSES)


@pytest.mark.parametrize('dataset', DATASETS)
def test_base_configs_follow_the_protocol(dataset: str) -> None:
    base = yaml.safe_load((CONFIGS / dataset / 'base.yaml').read_text())
    model = base['model']['init_args']
    data = base['data']['init_args']
    assert base['model']['class_path'] == 'torchgeo_macl.tasks.RetrievalTask'
    assert base['data']['class_path'] == DATAMODULES[dataset]
    assert model['model'] == 'resnet18'
    assert data['batch_size'] == 64
    assert data['sampler'] == 'label_aware'
    assert model['image_size'] == data['image_size']
    assert 'max_epochs' not in model  # the schedule follows trainer.max_epochs
    assert base['trainer']['accelerator'] == 'auto'
    assert 'seed_everything' in base
    assert 'loss' not in model
    assert 'loss_kwargs' not in model
    if dataset == 'synthetic':
        assert model['image_size'] == 32
        assert model['weights'] is None
        assert data['root'] == 'data/synthetic'
        assert data['download'] is False
    elif dataset == 'mlaid150':
        # CPU protocol: random weights, 64 px, validation queries against train
        assert model['image_size'] == 64
        assert model['weights'] is None
        assert data['query_split'] == 'val'
        assert data['split_dir'] != data['root']
    else:
        assert model['image_size'] == 224
        assert base['trainer']['max_epochs'] == 100
    # mask-aware views wherever the dataset has masks
    assert model['mask_aware_views'] is (not dataset.startswith('mlaid'))


@pytest.mark.parametrize('loss', LOSSES)
def test_loss_configs_hold_only_the_loss(loss: str) -> None:
    # one file per loss, shared by every dataset
    config = yaml.safe_load((CONFIGS / 'losses' / f'{loss}.yaml').read_text())
    assert set(config) == {'model'}
    assert set(config['model']) == {'init_args'}
    assert set(config['model']['init_args']) == {'loss', 'loss_kwargs'}
    assert config['model']['init_args']['loss'] == loss
    kwargs = config['model']['init_args']['loss_kwargs']
    if loss == 'bce':
        assert kwargs == {}
    else:
        # the kwargs are accepted by the loss itself
        get_loss(loss, **kwargs)


def test_macl_ablations_build_valid_losses(run_script: ModuleType) -> None:
    options = run_script.Options()
    freqs = [0.5, 0.1, 0.02]
    for name, ablation in run_script.ABLATIONS.items():
        run = run_script.Run('synthetic', 'macl', ablation, 0)
        config = run_script.resolve_config(run, options, Path('run'))
        kwargs = config['model']['init_args']['loss_kwargs']
        loss = MACLLoss(label_frequencies=freqs, **kwargs)
        full = {
            'pair_weighting': 'balanced',
            'alpha': 1.0,
            'beta': 1.0,
            'gamma_j': 0.0,
            'gamma_rho': 0.3,
            'anchor_alpha': 0.0,
        }
        expected = {
            'full': full,
            'no_pair_reweighting': full | {'pair_weighting': 'mean', 'alpha': 0.0},
            'no_dynamic_temperature': full | {'gamma_j': 0.0, 'gamma_rho': 0.0},
            'no_graded_overlap': full | {'beta': 0.0},
        }.get(name, full)
        got = {k: getattr(loss, k) for k in full}
        assert got == expected, name
        init = config['model']['init_args']
        assert init['mask_aware_views'] is (name != 'no_mask_aware_views')
        sampler = config['data']['init_args']['sampler']
        assert sampler == (
            'random' if name == 'no_label_aware_sampling' else 'label_aware'
        )


def test_resolve_config_sets_seed_dir_and_overrides(
    run_script: ModuleType, tmp_path: Path
) -> None:
    options = run_script.Options(
        results_dir=tmp_path,
        overrides=[('trainer.max_epochs', 2), ('data.init_args.num_workers', 1)],
    )
    run = run_script.Run('dlrsd', 'supcon', run_script.ABLATIONS['full'], 3)
    config = run_script.resolve_config(run, options)
    run_dir = tmp_path / 'runs' / 'dlrsd' / 'supcon' / 'seed3'
    assert config['seed_everything'] == 3
    assert config['data']['init_args']['seed'] == 3
    assert config['data']['init_args']['split_seed'] == 0
    assert config['trainer']['max_epochs'] == 2
    assert config['data']['init_args']['num_workers'] == 1
    assert config['trainer']['default_root_dir'] == str(run_dir)
    assert config['trainer']['logger']['init_args']['save_dir'] == str(run_dir)
    assert config['model']['init_args']['loss'] == 'supcon'
    # base settings survive the merge of the loss file
    assert config['model']['init_args']['image_size'] == 224


def test_assignments_and_overrides(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_script.parse_assignment('x.y=0') == ('x.y', 0)
    assert run_script.parse_assignment('x=[5]') == ('x', [5])
    assert run_script.parse_assignment('x=false') == ('x', False)
    assert run_script.parse_assignment('x=random') == ('x', 'random')
    with pytest.raises(ValueError, match='expected KEY=VALUE'):
        run_script.parse_assignment('novalue')
    # a dotted override sets one key of a mapping; the other keys stay
    options = run_script.Options(overrides=[('model.init_args.loss_kwargs.beta', 0.5)])
    run = run_script.Run('synthetic', 'macl', run_script.ABLATIONS['full'], 0)
    config = run_script.resolve_config(run, options, Path('run'))
    assert config['model']['init_args']['loss_kwargs']['beta'] == 0.5
    assert config['model']['init_args']['loss_kwargs']['alpha'] == 1.0
    # a key LightningCLI does not know is a usage error
    with pytest.raises(SystemExit) as info:
        run_script.main(
            ['--set', 'trainer.no_such_key=1', '--results', str(tmp_path), '--dry-run']
        )
    assert info.value.code == 2
    assert 'no_such_key' in capsys.readouterr().err


# ----------------------------------------------------------------- planning
def test_plan_and_dry_run(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = run_script.Options(results_dir=tmp_path)
    ablations = list(run_script.ABLATIONS.values())
    runs = run_script.plan(['mlaid'], ['macl', 'supcon'], [0, 1], ablations, options)
    methods = sorted({r.method for r in runs})
    # ablations apply to macl only; ML-AID has no masks, so no_mask_aware_views is
    # the same configuration as full and is left out
    assert methods == [
        'macl',
        'macl+no_dynamic_temperature',
        'macl+no_graded_overlap',
        'macl+no_label_aware_sampling',
        'macl+no_pair_reweighting',
        'supcon',
    ]
    assert len(runs) == 12

    code = run_script.main(
        [
            '--datasets',
            'synthetic',
            '--losses',
            'all',
            '--seeds',
            '0',
            '1',
            '2',
            '--ablations',
            'all',
            '--results',
            str(tmp_path),
            '--dry-run',
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith('33 runs')
    assert '[1/33] synthetic/macl/seed0  todo' in out
    assert 'synthetic/macl+no_mask_aware_views/seed2' in out
    assert 'synthetic/bce/seed2' in out
    assert not (tmp_path / 'runs').exists()


def test_bad_arguments(
    run_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_script.main(['--losses', 'nope', '--dry-run'])
    assert info.value.code == 2
    assert "unknown loss 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_script.main(['--ablations', 'no_such', '--dry-run'])
    with pytest.raises(SystemExit):
        run_script.main(['--set', 'nokey', '--dry-run'])


# ----------------------------------------------------------------- skip and redo
class FakeRuns:
    """Stands in for run_one: records calls, can crash, writes checkpoints."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path | None]] = []
        self.crash: set[str] = set()
        self.test = 'best'

    def __call__(
        self, config_path: Path, resume_from: Path | None = None, test: str = 'best'
    ) -> Any:
        assert test == self.test
        run_dir = config_path.parent
        name = '/'.join(run_dir.parts[-3:])
        self.calls.append((name, resume_from))
        ckpt = run_dir / 'logs' / 'version_0' / 'checkpoints'
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / 'last.ckpt').write_bytes(b'weights')
        if name in self.crash:
            raise RuntimeError(f'{name} crashed')
        config = yaml.safe_load(config_path.read_text())
        return {
            'metrics': {'mAP@20': 0.5 + config['seed_everything'] / 100},
            'per_label_AP@20': [0.25, float('nan')],
            'label_names': ['a', 'b'],
            'label_frequencies': [0.5, 0.1],
        }


@pytest.fixture
def fake(run_script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(run_script, 'run_one', runs)
    monkeypatch.setattr(run_script, 'ensure_synthetic_archive', lambda *a, **k: False)
    return runs


def _grid(results: Path, *extra: str) -> list[str]:
    return [
        '--datasets',
        'synthetic',
        '--losses',
        'macl',
        'supcon',
        '--seeds',
        '0',
        '1',
        '--results',
        str(results),
        '--quiet',
        *extra,
    ]


def test_skips_finished_runs(
    run_script: ModuleType,
    fake: FakeRuns,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_script.main(_grid(tmp_path)) == 0
    names = [c[0] for c in fake.calls]
    assert names == [
        f'synthetic/{m}/seed{s}' for m in ('macl', 'supcon') for s in (0, 1)
    ]
    out = capsys.readouterr().out
    assert '[1/4] synthetic/macl/seed0: running' in out
    assert '4 done, 0 skipped, 0 failed of 4 runs' in out

    record = json.loads(
        (tmp_path / 'runs/synthetic/supcon/seed1/metrics.json').read_text()
    )
    assert record['metrics'] == {'mAP@20': 0.51}
    assert record['seed'] == 1
    assert record['dataset'] == 'synthetic'
    assert record['method'] == 'supcon'
    assert record['ablation'] == 'full'
    assert record['per_label_AP@20'] == [0.25, None]  # NaN is written as null
    assert record['config_files'] == [
        'experiments/configs/synthetic/base.yaml',
        'experiments/configs/losses/supcon.yaml',
    ]
    assert record['command'].startswith(
        'python experiments/run.py --datasets synthetic'
    )
    assert record['config']['seed_everything'] == 1
    assert record['config']['trainer']['default_root_dir'].endswith(
        'runs/synthetic/supcon/seed1'
    )
    assert set(record['versions']) >= {'torchgeo-macl', 'torchgeo', 'torch', 'python'}
    assert record['wall_time_s'] >= 0
    assert record['date'].endswith('+00:00')
    # checkpoints are removed once the metrics are written
    assert not list(tmp_path.rglob('*.ckpt'))
    assert not list(tmp_path.rglob('.metrics.json*'))

    fake.calls.clear()
    assert run_script.main(_grid(tmp_path)) == 0
    assert fake.calls == []
    out = capsys.readouterr().out
    assert out.count(': skip (') == 4
    assert '0 done, 4 skipped, 0 failed' in out

    # display options are not part of the configuration that is compared
    fake.calls.clear()
    assert run_script.main([a for a in _grid(tmp_path) if a != '--quiet']) == 0
    assert fake.calls == []
    assert out.count(': skip (') == 4
    dry = capsys.readouterr().out
    assert run_script.main([*_grid(tmp_path), '--dry-run']) == 0
    assert capsys.readouterr().out.count('  done  ') == 4
    assert dry.count(': skip (') == 4

    # a changed configuration runs again, replacing the old results
    fake.calls.clear()
    assert run_script.main(_grid(tmp_path, '--set', 'trainer.max_epochs=2')) == 0
    assert len(fake.calls) == 4
    out = capsys.readouterr().out
    assert out.count('the configuration changed since') == 4
    assert run_script.main([*_grid(tmp_path), '--dry-run']) == 0
    assert capsys.readouterr().out.count('  changed  ') == 4
    assert '4 done, 0 skipped, 0 failed' in out
    record = json.loads(
        (tmp_path / 'runs/synthetic/supcon/seed1/metrics.json').read_text()
    )
    assert record['config']['trainer']['max_epochs'] == 2


def test_partial_recorded_configs_are_completed_before_comparing(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a recorded configuration that lists only the keys of the config files and the
    # overrides, with the run directory somewhere else, is the same run
    config = yaml.safe_load((CONFIGS / 'synthetic' / 'base.yaml').read_text())
    loss = yaml.safe_load((CONFIGS / 'losses' / 'macl.yaml').read_text())
    config['model']['init_args'] |= loss['model']['init_args']
    config['seed_everything'] = config['data']['init_args']['seed'] = 1
    elsewhere = '/elsewhere/runs/synthetic/macl/seed1'
    config['trainer'] |= {
        'default_root_dir': elsewhere,
        'logger': {
            'class_path': 'lightning.pytorch.loggers.CSVLogger',
            'init_args': {'save_dir': elsewhere, 'name': 'logs', 'version': 0},
        },
    }
    run_dir = tmp_path / 'runs' / 'synthetic' / 'macl' / 'seed1'
    run_dir.mkdir(parents=True)
    (run_dir / 'run_config.yaml').write_text(yaml.safe_dump(config))
    (run_dir / 'metrics.json').write_text('{}')
    args = ['--losses', 'macl', '--seeds', '1', '--results', str(tmp_path)]
    assert run_script.main([*args, '--dry-run']) == 0
    assert 'synthetic/macl/seed1  done  ' in capsys.readouterr().out
    config['trainer']['max_epochs'] = 3
    (run_dir / 'run_config.yaml').write_text(yaml.safe_dump(config))
    assert run_script.main([*args, '--dry-run']) == 0
    assert 'synthetic/macl/seed1  changed  ' in capsys.readouterr().out


def test_crashed_run_is_redone_and_resumed(
    run_script: ModuleType,
    fake: FakeRuns,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.crash = {'synthetic/supcon/seed0'}
    assert run_script.main(_grid(tmp_path, '--keep-checkpoints')) == 1
    out = capsys.readouterr()
    assert '[3/4] synthetic/supcon/seed0: FAILED' in out.out
    assert 'RuntimeError: synthetic/supcon/seed0 crashed' in out.err
    assert '3 done, 0 skipped, 1 failed' in out.out
    crashed = tmp_path / 'runs/synthetic/supcon/seed0'
    assert not (crashed / 'metrics.json').exists()
    assert (crashed / 'run_config.yaml').exists()
    # --keep-checkpoints keeps those of the finished runs
    assert (
        tmp_path / 'runs/synthetic/macl/seed0/logs/version_0/checkpoints/last.ckpt'
    ).exists()

    # the same configuration resumes from the crashed run's last checkpoint
    fake.crash = set()
    fake.calls.clear()
    assert run_script.main(_grid(tmp_path)) == 0
    last = crashed / 'logs' / 'version_0' / 'checkpoints' / 'last.ckpt'
    assert fake.calls == [('synthetic/supcon/seed0', last)]
    assert 'resume from' in capsys.readouterr().out
    record = json.loads((crashed / 'metrics.json').read_text())
    assert record['resumed_from'].endswith('checkpoints/last.ckpt')

    # a changed configuration starts over; so does --fresh
    (crashed / 'metrics.json').unlink()
    (crashed / 'stale.txt').write_text('old')
    fake.calls.clear()
    assert run_script.main(_grid(tmp_path, '--max-epochs', '3')) == 0
    # (the finished runs run again too: their configuration changed)
    assert len(fake.calls) == 4
    assert ('synthetic/supcon/seed0', None) in fake.calls
    assert not (crashed / 'stale.txt').exists()
    assert 'starting over' in capsys.readouterr().out

    (crashed / 'metrics.json').unlink()
    fake.calls.clear()
    fake.crash = {'synthetic/supcon/seed0'}
    run_script.main(_grid(tmp_path))
    fake.crash = set()
    fake.calls.clear()
    assert run_script.main(_grid(tmp_path, '--fresh')) == 0
    assert fake.calls == [('synthetic/supcon/seed0', None)]


def test_ablation_runs_and_defined_ablations(
    run_script: ModuleType, fake: FakeRuns, tmp_path: Path
) -> None:
    args = ['--ablations', 'full', 'no_graded_overlap', '--seeds', '0']
    args += ['--losses', 'macl', 'supcon', '--results', str(tmp_path), '--quiet']
    assert run_script.main(args) == 0
    assert [c[0] for c in fake.calls] == [
        'synthetic/macl/seed0',
        'synthetic/macl+no_graded_overlap/seed0',
        'synthetic/supcon/seed0',
    ]
    path = tmp_path / 'runs/synthetic/macl+no_graded_overlap/seed0'
    record = json.loads((path / 'metrics.json').read_text())
    assert record['ablation'] == 'no_graded_overlap'
    assert record['overrides'] == {'model.init_args.loss_kwargs.beta': 0.0}
    config = yaml.safe_load((path / 'run_config.yaml').read_text())
    assert config['model']['init_args']['loss_kwargs']['beta'] == 0.0
    assert config['model']['init_args']['loss_kwargs']['alpha'] == 1.0

    fake.calls.clear()
    args = ['--define-ablation', 'warm', 'model.init_args.loss_kwargs.temperature=0.2']
    args += ['--losses', 'supcon', '--seeds', '0', '--results', str(tmp_path)]
    assert run_script.main(args) == 0
    assert [c[0] for c in fake.calls] == ['synthetic/supcon+warm/seed0']
    config = yaml.safe_load(
        (tmp_path / 'runs/synthetic/supcon+warm/seed0/run_config.yaml').read_text()
    )
    assert config['model']['init_args']['loss_kwargs'] == {'temperature': 0.2}


def test_synthetic_archive_parameters(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an existing archive is left alone when its recorded parameters match, reused
    # with a warning when it has no record, and refused when they differ
    (tmp_path / 'DLRSD').mkdir()
    assert not run_script.ensure_synthetic_archive(tmp_path, {'num_images': 1})
    assert 'cannot be checked' in capsys.readouterr().out
    record = tmp_path / run_script.SYNTHETIC_PARAMS_FILE
    record.write_text(json.dumps({'num_images': 1}))
    assert not run_script.ensure_synthetic_archive(tmp_path, {'num_images': 1})
    with pytest.raises(ValueError, match=re.escape("written with {'num_images': 1}")):
        run_script.ensure_synthetic_archive(tmp_path, {'num_images': 2})
    assert run_script.ensure_synthetic_archive(tmp_path / 'new', {}, dry_run=True)
    assert not (tmp_path / 'new').exists()
    assert run_script.SYNTHETIC_ARCHIVE['image_size'] == 64


# ----------------------------------------------------------------- LightningCLI
@pytest.mark.parametrize(
    ('dataset', 'loss'),
    [(d, 'macl') for d in DATASETS] + [('synthetic', loss) for loss in LOSSES[1:]],
)
def test_configs_parse_with_lightning_cli(
    dataset: str,
    loss: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, 'argv', ['torchgeo-macl'])
    base = CONFIGS / dataset / 'base.yaml'
    with pytest.raises(SystemExit) as info:
        cli_main(
            [
                'fit',
                '--config',
                str(base),
                '--config',
                str(CONFIGS / 'losses' / f'{loss}.yaml'),
                '--print_config',
            ]
        )
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed['model']['class_path'] == 'torchgeo_macl.tasks.RetrievalTask'
    assert printed['model']['init_args']['loss'] == loss
    expected = yaml.safe_load((CONFIGS / 'losses' / f'{loss}.yaml').read_text())
    kwargs = expected['model']['init_args']['loss_kwargs']
    assert printed['model']['init_args']['loss_kwargs'] == kwargs
    assert printed['data']['class_path'] == DATAMODULES[dataset]
    assert printed['model']['init_args']['model'] == 'resnet18'
    assert printed['data']['init_args']['batch_size'] == 64


# ----------------------------------------------------------------- end to end
@pytest.mark.usefixtures('tiny_models')
def test_tiny_end_to_end_run(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / 'data'
    results = tmp_path / 'results'
    args = [
        '--datasets',
        'synthetic',
        '--losses',
        'macl',
        '--seeds',
        '0',
        '--results',
        str(results),
        '--synthetic-images',
        '84',
        '--synthetic-size',
        '32',
        '--set',
        f'data.init_args.root={data}',
        '--set',
        'data.init_args.batch_size=16',
        '--set',
        'data.init_args.image_size=32',
        '--set',
        'model.init_args.image_size=32',
        '--set',
        'model.init_args.embed_dim=16',
        '--set',
        'model.init_args.proj_hidden_dim=32',
        '--set',
        'model.init_args.ks=[5]',
        '--set',
        'model.init_args.monitor=val_mAP@5',
        '--set',
        'trainer.log_every_n_steps=1',
        '--max-epochs',
        '1',
        '--limit-train-batches',
        '2',
        '--accelerator',
        'cpu',
        '--quiet',
    ]
    assert run_script.main(args) == 0, capsys.readouterr()
    assert (data / 'DLRSD').is_dir()
    assert json.loads((data / 'synthetic_archive.json').read_text())['num_images'] == 84
    run_dir = results / 'runs' / 'synthetic' / 'macl' / 'seed0'
    record = json.loads((run_dir / 'metrics.json').read_text())
    metrics = record['metrics']
    for key in (
        'mAP@5',
        'NDCG@5',
        'WAP@5',
        'ACG@5',
        'P@5',
        'rare_mAP@5',
        'mAP_jaccard@5',
    ):
        assert 0.0 <= metrics[key] <= (17.0 if key[0] in 'AW' else 1.0), key
    assert len(record['label_names']) == 17
    assert len(record['label_frequencies']) == 17
    assert len(record['per_label_AP@5']) == 17
    assert record['epochs'] == 1
    assert record['synthetic_archive'] == {
        'num_images': 84,
        'image_size': 32,
        'seed': 0,
    }
    assert record['checkpoint'] is not None
    assert not list(run_dir.rglob('*.ckpt'))
    # one configuration file per run (hparams.yaml is the logger's, not a config)
    configs = [p.name for p in run_dir.rglob('*.yaml') if p.name != 'hparams.yaml']
    assert configs == ['run_config.yaml']
    out = capsys.readouterr().out
    assert 'synthetic/macl/seed0: done in' in out

    assert run_script.main(args) == 0
    assert ': skip (' in capsys.readouterr().out


def test_test_checkpoint_is_passed_on(
    run_script: ModuleType, fake: FakeRuns, tmp_path: Path
) -> None:
    fake.test = 'last'
    args = ['--losses', 'ntxent', '--seeds', '4', '--results', str(tmp_path)]
    assert run_script.main([*args, '--test-checkpoint', 'last']) == 0
    assert fake.calls == [('synthetic/ntxent/seed4', None)]
