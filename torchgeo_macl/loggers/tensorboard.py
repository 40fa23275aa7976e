"""A TensorBoard logger that writes metric names as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

__all__ = ('TensorBoardLogger',)


def _summary_class(writer: Any) -> Any:
    """The ``Summary`` protocol buffer class of a summary writer's library.

    Args:
        writer: A ``SummaryWriter`` of tensorboardX or of
            :mod:`torch.utils.tensorboard`.

    Returns:
        tensorboardX's ``Summary`` for a tensorboardX writer, TensorBoard's
        otherwise.
    """
    if type(writer).__module__.split('.')[0] == 'tensorboardX':
        from tensorboardX.proto.summary_pb2 import Summary
    else:
        from tensorboard.compat.proto.summary_pb2 import Summary
    return Summary


class TensorBoardLogger(_LightningTensorBoardLogger):
    r"""Lightning's TensorBoard logger, with metric names kept as the scalars' tags.

    The summary writers of tensorboardX and :mod:`torch.utils.tensorboard` replace
    every character of a tag outside ``[-/\w.]`` by ``_``, so that Lightning's
    :class:`~lightning.pytorch.loggers.TensorBoardLogger` shows ``val_mAP@20`` as
    ``val_mAP_20``, unlike the other loggers and the checkpoint's ``monitor``.
    This logger writes each scalar's summary itself, with the metric's name as
    its tag; TensorBoard reads any tag. Everything else (folders, versions,
    hyperparameters, ``add_scalars`` for dictionaries) is Lightning's.

    ``torchgeo-macl fit|validate|test|predict`` use it instead of Lightning's
    default logger when the Trainer's ``logger`` is left at its default, with the
    same folders (``<default_root_dir>/lightning_logs/version_N``).
    """

    @rank_zero_only
    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """Write the metrics as scalar summaries tagged with their names.

        Args:
            metrics: Metric names and values (numbers, one-element tensors, or
                dictionaries of them, written with ``add_scalars``).
            step: Global step of the values.

        Raises:
            ValueError: If a value is neither a number nor a dictionary.
        """
        prefixed = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        writer: Any = self.experiment
        summary_class = _summary_class(writer)
        for name, value in prefixed.items():
            if isinstance(value, Tensor):
                value = value.item()
            if isinstance(value, dict):
                writer.add_scalars(name, value, step)
                continue
            try:
                scalar = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f'you tried to log {value!r} as {name!r}, which is not supported: '
                    'log a number, a one-element tensor or a dictionary of them'
                ) from exc
            summary = summary_class(
                value=[summary_class.Value(tag=name, simple_value=scalar)]
            )
            writer._get_file_writer().add_summary(summary, step)
