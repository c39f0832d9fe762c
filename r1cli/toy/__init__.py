"""`r1 toy`: a small world of arithmetic word problems, and tiny base models pre-trained on it."""

from r1cli.toy.command import app

__all__ = ["app"]
