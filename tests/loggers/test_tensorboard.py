import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger as LightningLogger
from tensorboardX.proto.event_pb2 import Event

from torchgeo_macl.loggers import TensorBoardLogger
from torchgeo_macl.main import lightning_cli, main

CONF = Path(__file__).parents[1] / 'conf'
DATA = Path(__file__).parents[1] / 'data'


def _events(folder: Path) -> Iterator[Event]:
    """The events of the TensorBoard event files under ``folder``.

    Each record is an 8-byte little-endian length, its 4-byte CRC, the payload (an
    ``Event``) and the payload's 4-byte CRC.
    """
    files = sorted(folder.glob('**/events.out.tfevents.*'))
    assert files, f'no event file under {folder}'
    for path in files:
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack('<Q', data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            assert len(payload) == length, f'truncated record in {path}'
            offset += 12 + length + 4
            yield Event.FromString(payload)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalar values by tag: ``(step, value)`` in the order written."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in _events(folder):
        for value in event.summary.value:
            if value.HasField('simple_value'):
                scalars.setdefault(value.tag, []).append(
                    (event.step, value.simple_value)
                )
    return scalars


def test_tags_are_the_metric_names(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name='run', version=0)
    logger.log_metrics({'val_mAP@20': 0.5, 'test NDCG@5': torch.tensor(0.25)}, step=3)
    logger.log_metrics({'val_mAP@20': 0.75}, step=4)
    logger.finalize('success')
    scalars = _scalars(tmp_path / 'run' / 'version_0')
    assert scalars == {'val_mAP@20': [(3, 0.5), (4, 0.75)], 'test NDCG@5': [(3, 0.25)]}


def test_prefix_dictionaries_and_bad_values(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name='', version=0, prefix='fold1')
    logger.log_metrics({'mAP@1': 1.0}, step=0)
    logger.log_metrics({'loss': {'a': 2.0}}, step=1)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'fold1-bad'"):
        logger.log_metrics({'bad': 'text'}, step=2)  # type: ignore[dict-item]
    logger.finalize('success')
    assert _scalars(tmp_path / 'version_0') == {
        'fold1-mAP@1': [(0, 1.0)],
        'fold1-loss': [(1, 2.0)],
    }


def _config(tmp_path: Path) -> Path:
    """The tiny DLRSD config with the Trainer's logger left at its default."""
    config = yaml.safe_load((CONF / 'dlrsd.yaml').read_text())
    del config['trainer']['logger']
    config['model']['init_args']['model'] = 'test_resnet'
    root = tmp_path / 'dlrsd'
    shutil.copytree(DATA / 'dlrsd' / 'DLRSD', root / 'DLRSD')
    shutil.rmtree(root / 'DLRSD' / 'splits', ignore_errors=True)
    config['data']['init_args']['root'] = str(root)
    path = tmp_path / 'dlrsd.yaml'
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_fit_logs_metric_names_to_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr('sys.argv', ['torchgeo-macl'])
    out = tmp_path / 'out'
    argv = ['fit', '--config', str(_config(tmp_path))]
    assert (
        main([*argv, f'--trainer.default_root_dir={out}', '--trainer.max_epochs=1'])
        == 0
    )
    run = out / 'lightning_logs' / 'version_0'  # where Lightning's logger writes
    assert (run / 'checkpoints' / 'last.ckpt').is_file()
    scalars = _scalars(run)
    assert 'val_mAP@1' in scalars  # the monitored metric of the config
    assert 'val_mAP_1' not in scalars
    assert not [tag for tag in scalars if '@' not in tag and 'mAP_' in tag]


@pytest.mark.parametrize(
    ('setting', 'expected'),
    [
        ([], TensorBoardLogger),
        (['--trainer.logger=true'], TensorBoardLogger),
        (['--trainer.logger=false'], None),
        (
            [
                '--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger',
                '--trainer.logger.save_dir=mine',
            ],
            LightningLogger,
        ),
    ],
)
def test_cli_default_logger_only_is_replaced(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: list[str],
    expected: type | None,
) -> None:
    monkeypatch.setattr('sys.argv', ['torchgeo-macl'])
    monkeypatch.chdir(tmp_path)
    args = ['--config', str(_config(tmp_path)), *setting]
    cli = lightning_cli(args, run=False, save_config=False)
    logger = cli.trainer.logger
    if expected is None:
        assert logger is None
        return
    assert type(logger) is expected
    if expected is TensorBoardLogger:
        # the folders of Lightning's default logger
        assert logger.save_dir == str(tmp_path)
        assert logger.root_dir == str(tmp_path / 'lightning_logs')
    else:
        assert logger.save_dir == 'mine'
