from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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
