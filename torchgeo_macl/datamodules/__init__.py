"""datamodules."""

__all__: list[str] = []
