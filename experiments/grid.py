"""The experiment grid: losses, MACL ablations and runs, and how they are named.

A run is one (dataset, loss, ablation, seed). Its method is the loss, or
``<loss>+<ablation>`` for an ablation other than ``full``; its results live in
``<results>/runs/<dataset>/<method>/seed<k>``. ``run.py`` runs the grid and
``report.py`` orders its tables by :data:`LOSSES` and :data:`ABLATIONS`.

The ablations of MACL apply to the ``macl`` loss only. The full MACL configuration is
the ``macl`` run itself: ``losses/macl.yaml`` turns on pair reweighting (``alpha``),
graded overlap (``beta``) and the dynamic temperature (``gamma_j``, ``gamma_rho``),
and each dataset's ``base.yaml`` turns on label-aware sampling and, where the dataset
has masks, mask-aware views, for every loss. Each ablation turns one component off:

==========================  ===================================================
``full``                    nothing changed (the plain ``macl`` run)
``no_pair_reweighting``     ``loss_kwargs.pair_weighting = mean``, ``alpha = 0``
``no_anchor_weighting``     ``loss_kwargs.anchor_alpha = 0``
``no_dynamic_temperature``  ``loss_kwargs.gamma_j = gamma_rho = 0``
``no_graded_overlap``       ``loss_kwargs.beta = 0``
``no_label_aware_sampling`` ``data.init_args.sampler = random``
``no_mask_aware_views``     ``model.init_args.mask_aware_views = false``
==========================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPERIMENTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXPERIMENTS_DIR.parent
CONFIG_DIR = EXPERIMENTS_DIR / 'configs'
#: Where runs and reports go by default: outside the committed results
#: (``experiments/results``).
RESULTS_DIR = REPO_ROOT / 'outputs' / 'experiments'
#: Folder of the loss configs (``<loss>.yaml``), under the configs directory.
LOSS_CONFIGS = 'losses'

#: Order of the paper's methods in reports; a loss config not listed here comes
#: after them, alphabetically.
REPORT_ORDER = ('macl', 'supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent', 'bce')


def _loss_names() -> tuple[str, ...]:
    names = {path.stem for path in (CONFIG_DIR / LOSS_CONFIGS).glob('*.yaml')}
    known = [name for name in REPORT_ORDER if name in names]
    return (*known, *sorted(names - set(known)))


#: Losses of the experiments, one per ``losses/<loss>.yaml``, in report order.
LOSSES = _loss_names()


@dataclass(frozen=True)
class Ablation:
    """A named set of configuration overrides.

    Attributes:
        name: Name, used in the run directory (``<loss>+<name>``).
        overrides: Dotted configuration keys and their values.
        losses: Losses it applies to (None: every loss).
        description: One line for the plan and the report.
    """

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    losses: tuple[str, ...] | None = None
    description: str = ''


_KW = 'model.init_args.loss_kwargs'

#: Built-in ablations of MACL, in report order; ``full`` changes nothing.
ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation('full', (), None, 'every component on'),
        Ablation(
            'no_pair_reweighting',
            ((f'{_KW}.pair_weighting', 'mean'), (f'{_KW}.alpha', 0.0)),
            ('macl',),
            'pair reweighting off (pair_weighting = mean, alpha = 0)',
        ),
        Ablation(
            'no_anchor_weighting',
            ((f'{_KW}.anchor_alpha', 0.0),),
            ('macl',),
            'anchor weighting off (anchor_alpha = 0)',
        ),
        Ablation(
            'no_dynamic_temperature',
            ((f'{_KW}.gamma_j', 0.0), (f'{_KW}.gamma_rho', 0.0)),
            ('macl',),
            'dynamic temperature off (gamma_j = gamma_rho = 0)',
        ),
        Ablation(
            'no_graded_overlap',
            ((f'{_KW}.beta', 0.0),),
            ('macl',),
            'graded overlap off (beta = 0)',
        ),
        Ablation(
            'no_label_aware_sampling',
            (('data.init_args.sampler', 'random'),),
            ('macl',),
            'random batches instead of label-aware sampling',
        ),
        Ablation(
            'no_mask_aware_views',
            (('model.init_args.mask_aware_views', False),),
            ('macl',),
            'view labels = image labels (no mask-aware views)',
        ),
    )
}


def method_name(loss: str, ablation: str) -> str:
    """The method of a loss and an ablation.

    Args:
        loss: Loss name.
        ablation: Ablation name (``full`` for none).

    Returns:
        The loss, or ``<loss>+<ablation>``.
    """
    return loss if ablation == 'full' else f'{loss}+{ablation}'


def split_method(method: str) -> tuple[str, str]:
    """The loss and the ablation of a method (the inverse of :func:`method_name`).

    Args:
        method: ``<loss>`` or ``<loss>+<ablation>``.

    Returns:
        The loss and the ablation (``full`` for none).
    """
    loss, _, ablation = method.partition('+')
    return loss, ablation or 'full'


@dataclass(frozen=True)
class Run:
    """One cell of the grid.

    Attributes:
        dataset: Dataset (folder under the configs directory).
        loss: Loss name.
        ablation: The ablation applied.
        seed: Training seed.
    """

    dataset: str
    loss: str
    ablation: Ablation
    seed: int

    @property
    def method(self) -> str:
        """The loss, or ``<loss>+<ablation>`` for an ablation other than ``full``."""
        return method_name(self.loss, self.ablation.name)

    @property
    def name(self) -> str:
        """``<dataset>/<method>/seed<k>``."""
        return f'{self.dataset}/{self.method}/seed{self.seed}'

    def run_dir(self, results_dir: Path) -> Path:
        """Directory of this run.

        Args:
            results_dir: Root of the results.

        Returns:
            ``<results_dir>/runs/<dataset>/<method>/seed<k>``.
        """
        return results_dir / 'runs' / self.dataset / self.method / f'seed{self.seed}'

    def config_files(self, config_dir: Path) -> list[Path]:
        """The YAML files of this run, in the order LightningCLI merges them.

        Args:
            config_dir: Directory holding ``<dataset>/base.yaml`` and
                ``losses/<loss>.yaml``.

        Returns:
            The dataset's base file and the loss file.
        """
        return [
            config_dir / self.dataset / 'base.yaml',
            config_dir / LOSS_CONFIGS / f'{self.loss}.yaml',
        ]


def available_datasets(config_dir: Path) -> list[str]:
    """Datasets with a ``base.yaml`` under the configs directory.

    Args:
        config_dir: Directory of the YAML configs.

    Returns:
        Their names, sorted.
    """
    return sorted(p.parent.name for p in config_dir.glob('*/base.yaml'))
