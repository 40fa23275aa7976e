import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / 'experiments'
# the scripts import their sibling modules, as they do when run from the command line
if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))


def _load(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` under a name no other module uses."""
    module_name = f'_macl_experiments_{name.replace("/", "_")}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, EXPERIMENTS / f'{name}.py'
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def run_script() -> ModuleType:
    return _load('run')


@pytest.fixture(scope='session')
def device_check() -> ModuleType:
    return _load('benchmarks/device_check')


@pytest.fixture(scope='session')
def report_script() -> ModuleType:
    return _load('report')


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build timm's tiny test ResNet whatever backbone a config names."""
    import timm

    from torchgeo_macl.tasks import retrieval

    create_model = timm.create_model

    def tiny(name: str, *args: Any, **kwargs: Any) -> Any:
        kwargs['pretrained'] = False
        return create_model('test_resnet', *args, **kwargs)

    monkeypatch.setattr(retrieval.timm, 'create_model', tiny)
