"""Lightning loggers."""

from .tensorboard import TensorBoardLogger

__all__ = ('TensorBoardLogger',)
