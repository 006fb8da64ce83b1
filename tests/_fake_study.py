"""A small study used by the contract, CLI and report tests (registered by monkeypatching)."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import numpy as np

from jaxinterp.keys import named_key
from jaxinterp.studies import claims as claims_lib
from jaxinterp.studies.base import Study, StudyConfig


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the fake study.

    Attributes:
      n: number of uniform draws.
      scale: multiplies the draws.
      xs: a tuple of floats.
      flag: a switch.
      mode: one of two modes.
      label: free text.
      limit: an optional integer.
    """

    n: int = 6
    scale: float = 1.0
    xs: tuple[float, ...] = (1.0, 2.0)
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    label: str = "x"
    limit: int | None = None

    @classmethod
    def quick(cls) -> Config:
        return cls(n=3, flag=True)

    def validate(self) -> None:
        super().validate()
        if self.n <= 0:
            raise ValueError(f"`n` must be positive; got {self.n}.")
        if self.scale <= 0:
            raise ValueError(f"`scale` must be positive; got {self.scale}.")


class Result(NamedTuple):
    values: np.ndarray
    other: np.ndarray


def compute(config: Config, key) -> Result:
    values = np.asarray(jax.random.uniform(named_key(key, "values"), (config.n,))) * config.scale
    other = np.asarray(jax.random.uniform(named_key(key, "other"), (config.n,)))
    return Result(values, other)


def metrics(result: Result) -> dict:
    return {"values": result.values, "mean": float(result.values.mean())}


def figures(result: Result) -> dict:
    from jaxinterp.plotting import subplots

    out = {}
    for suffix, data in (("first", result.values), ("second", result.other)):
        fig, ax = subplots(figsize=(3, 2))
        ax.plot(data)
        ax.set_xlabel("index")
        ax.set_ylabel(suffix)
        out[suffix] = fig
    return out


def claims(result: Result) -> list:
    return [claims_lib.within("the draws average one half", 0.5, result.values, tolerance=0.5, figure="first"),
            claims_lib.ordering("values exceed zero", result.values, np.zeros_like(result.values) - 1,
                                figure="fake_second.png")]


def summary(result: Result) -> dict:
    return {"mean": float(result.values.mean())}


STUDY = Study(name="fake", description="a fake study for tests", config=Config, compute=compute,
              metrics=metrics, figures=figures, claims=claims, summary=summary)
