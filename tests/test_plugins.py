import importlib.metadata
import warnings

import pytest

from torchgeo_macl import plugins
from torchgeo_macl.main import main
from torchgeo_macl.plugins import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    PluginLoadWarning,
    discover_plugins,
)


def _with_extra(monkeypatch: pytest.MonkeyPatch, *extra: str) -> None:
    """Add fake entry points to the real plugin group."""
    real = importlib.metadata.entry_points

    def fake(**kwargs: str) -> importlib.metadata.EntryPoints:
        eps = list(real(**kwargs))
        if kwargs.get('group') == ENTRY_POINT_GROUP:
            for spec in extra:
                name, value = spec.split('=', 1)
                eps.append(
                    importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
                )
        return importlib.metadata.EntryPoints(eps)

    monkeypatch.setattr(plugins.importlib.metadata, 'entry_points', fake)


def _by_name(infos: list[PluginInfo]) -> dict[str, PluginInfo]:
    return {info.name: info for info in infos}


def test_own_plugin_is_registered() -> None:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert 'torchgeo_macl' in eps.names
    info = _by_name(discover_plugins())['torchgeo_macl']
    assert info.ok, info.error
    assert info.distribution == 'torchgeo-macl'
    assert info.version == importlib.metadata.version('torchgeo-macl')
    assert info.target == 'torchgeo_macl.plugins:register'


def test_broken_plugin_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_extra(monkeypatch, 'broken=torchgeo_macl_no_such_module:register')
    with pytest.warns(PluginLoadWarning, match='broken.*failed to load'):
        infos = _by_name(discover_plugins())
    assert infos['torchgeo_macl'].ok
    assert not infos['broken'].ok
    assert infos['broken'].error is not None
    assert 'ModuleNotFoundError' in infos['broken'].error
    assert 'torchgeo_macl_no_such_module' in infos['broken'].error


def test_plugin_raising_on_import_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # json.loads is a callable that raises TypeError when called without arguments
    _with_extra(monkeypatch, 'raises=json:loads')
    with pytest.warns(PluginLoadWarning):
        info = _by_name(discover_plugins())['raises']
    assert info.error is not None
    assert info.error.startswith('TypeError')


def test_module_plugin_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    # a module target is inspected: torchgeo.datamodules holds datamodules
    _with_extra(monkeypatch, 'tg=torchgeo.datamodules')
    with warnings.catch_warnings():
        warnings.simplefilter('error', PluginLoadWarning)
        info = _by_name(discover_plugins())['tg']
    assert info.ok
    assert 'NonGeoDataModule' in info.components['datamodules']


def test_cli_plugins_lists_components(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_extra(monkeypatch, 'broken=torchgeo_macl_no_such_module')
    assert main(['plugins']) == 0
    out = capsys.readouterr().out
    assert 'torchgeo_macl  [ok]  torchgeo_macl.plugins:register' in out
    assert 'broken  [FAILED]' in out
    assert 'ModuleNotFoundError' in out
