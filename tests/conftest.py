import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer


def _quiet_trainer(root: Path, **kwargs: Any) -> Trainer:
    """A CPU trainer writing under ``root``, without logger, progress bar or summary.

    Keyword arguments are those of :class:`~lightning.pytorch.Trainer`.
    """
    return Trainer(
        accelerator='cpu',
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.fixture(scope='session')
def quiet_trainer() -> Callable[..., Trainer]:
    """Build CPU trainers for short fits: ``quiet_trainer(root, **trainer_kwargs)``."""
    return _quiet_trainer


def _tiny_checkpoint(
    path: Path, *, trained_at: int | None = None, **hparams: Any
) -> Path:
    """Save an untrained tiny RetrievalTask as a Lightning checkpoint at ``path``.

    With ``trained_at``, the task records that it was trained at that many pixels on
    images normalised with the DLRSD datamodule's statistics. Other keyword arguments
    go to :class:`~torchgeo_macl.tasks.RetrievalTask`.
    """
    import lightning

    from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
    from torchgeo_macl.tasks import RetrievalTask

    task = RetrievalTask(
        model='test_resnet', embed_dim=8, proj_hidden_dim=16, **hparams
    )
    if trained_at is not None:
        task.input_size.fill_(trained_at)
        task.input_mean.copy_(DLRSDRetrievalDataModule.mean)
        task.input_std.copy_(DLRSDRetrievalDataModule.std)
    torch.save(
        {
            'state_dict': task.state_dict(),
            'hyper_parameters': dict(task.hparams),
            'pytorch-lightning_version': lightning.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope='session')
def tiny_checkpoint() -> Callable[..., Path]:
    """Write tiny task checkpoints: ``tiny_checkpoint(path, trained_at=None, **hparams)``."""
    return _tiny_checkpoint


def _run_command(
    argv: list[str], cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` with Python warnings off and expect exit status 0.

    Keyword arguments are set in the environment of the command.
    """
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, 'PYTHONWARNINGS': 'ignore', **env},
        check=False,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='session')
def run_command() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a command that must succeed: ``run_command(argv, cwd, **env)``."""
    return _run_command


@pytest.fixture(scope='module')
def one_thread() -> Iterator[None]:
    """Run a module's tests with one torch thread and one faiss thread.

    Intra-op threads and OpenMP teams spin when the cores are shared with other work;
    one thread keeps tiny models and small indexes fast and their timings steady.
    """
    import faiss

    torch_threads = torch.get_num_threads()
    faiss_threads = faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
