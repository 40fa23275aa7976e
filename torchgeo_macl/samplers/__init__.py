"""samplers."""

__all__: list[str] = []
