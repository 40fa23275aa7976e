import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from torch import nn

from torchgeo_macl.datasets import DLRSD, MLAID, WHDLD, RetrievalDataset

#: The fake archives, ``tests/data/<file_prefix>/``.
DATA = Path(__file__).parents[1] / 'data'


def _load_generator(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f'{name}_data', DATA / name / 'data.py'
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_extracted(cls: type[RetrievalDataset], root: Path) -> Path:
    shutil.copytree(DATA / cls.file_prefix / cls.directory, root / cls.directory)
    return root


@pytest.fixture(scope='session')
def load_generator() -> Callable[[str], ModuleType]:
    """Import a fake-data script: ``load_generator('whdld')``."""
    return _load_generator


@pytest.fixture(scope='session')
def copy_extracted() -> Callable[[type[RetrievalDataset], Path], Path]:
    """Copy a fake extracted archive under a root: ``copy_extracted(WHDLD, root)``."""
    return _copy_extracted


@pytest.fixture(params=[DLRSD, MLAID, WHDLD], ids=lambda cls: cls.__name__)
def any_dataset(request: pytest.FixtureRequest, tmp_path: Path) -> RetrievalDataset:
    """The train split of every fake archive, extracted under ``tmp_path``."""
    cls: type[RetrievalDataset] = request.param
    return cls(_copy_extracted(cls, tmp_path), transforms=nn.Identity())
