"""r1: the DeepSeek-R1 training pipeline as composable stage commands."""

__version__ = "0.1.0"
