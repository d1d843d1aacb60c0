"""Design matrices for federated regression: intercept, numeric columns, treatment-coded factors.

Every node must build the *same* columns in the same order from public information only:
the job's feature list, which features are categorical, their declared levels and the
reference level. A node never learns levels from its own data (a level present at one
node but not another would shift every later column), so categorical features need
declared levels, and a value outside them is refused.

Term names follow the patsy/statsmodels convention: ``(Intercept)``, numeric columns by
their name, and one column ``name[T.level]`` per non-reference level of a factor
(``parity[T.2]``, ``bmi_cat[T.1]``), in the order the levels were declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from federation.errors import FederationError

__all__ = ["INTERCEPT", "DesignError", "DesignSpec", "build_design", "design_from_job"]

#: Name of the intercept term.
INTERCEPT = "(Intercept)"


class DesignError(FederationError, ValueError):
    """The data cannot be turned into the job's design matrix (missing column, bad level, NaN)."""


@dataclass(frozen=True)
class DesignSpec:
    """The public recipe of a design matrix.

    Attributes:
        features: columns in order (numeric or categorical).
        categorical: categorical feature -> its reference level.
        levels: categorical feature -> all its levels, in the order columns are made.
        intercept: whether the first column is the intercept.

    """

    features: tuple[str, ...]
    categorical: Mapping[str, int | str] = field(default_factory=dict)
    levels: Mapping[str, Sequence[int | str]] = field(default_factory=dict)
    intercept: bool = True

    def __post_init__(self) -> None:
        for name, ref in self.categorical.items():
            if name not in self.features:
                raise DesignError(f"categorical: {name!r} is not a feature")
            lv = list(self.levels.get(name, ()))
            if not lv:
                raise DesignError(f"levels: categorical feature {name!r} needs declared levels")
            if len(set(lv)) != len(lv):
                raise DesignError(f"levels: {name!r} repeats a level")
            if ref not in lv:
                raise DesignError(
                    f"categorical: reference level {ref!r} of {name!r} is not among {lv}"
                )

    @property
    def term_names(self) -> list[str]:
        """Return the column names of the design matrix, in order."""
        names = [INTERCEPT] if self.intercept else []
        for feat in self.features:
            if feat in self.categorical:
                ref = self.categorical[feat]
                names += [f"{feat}[T.{lv}]" for lv in self.levels[feat] if lv != ref]
            else:
                names.append(feat)
        return names


def design_from_job(glm: object, features: Sequence[str]) -> DesignSpec:
    """Return the :class:`DesignSpec` of a job's ``[glm]`` table (``GlmSpec``) and features."""
    return DesignSpec(
        features=tuple(features),
        categorical=dict(getattr(glm, "categorical", {})),
        levels={k: list(v) for k, v in getattr(glm, "levels", {}).items()},
    )


def build_design(df: pd.DataFrame, design: DesignSpec) -> np.ndarray:
    """Build the design matrix of ``df`` (rows as given) following ``design``.

    Returns:
        A float64 array of shape ``(len(df), len(design.term_names))``.

    Raises:
        DesignError: a feature is missing, a numeric value is NaN/inf or not numeric,
            or a categorical value is not one of the declared levels.

    """
    cols: list[np.ndarray] = []
    n = len(df)
    if design.intercept:
        cols.append(np.ones(n))
    for feat in design.features:
        if feat not in df.columns:
            raise DesignError(f"feature {feat!r} is not a column of the data")
        series = df[feat]
        if feat in design.categorical:
            levels = list(design.levels[feat])
            values = series.to_numpy()
            known = pd.Series(values).isin(levels).to_numpy()
            if not known.all():
                bad = sorted({str(v) for v in values[~known]})[:5]
                raise DesignError(
                    f"feature {feat!r}: value(s) {bad} not among the declared levels {levels}"
                )
            ref = design.categorical[feat]
            for lv in levels:
                if lv != ref:
                    cols.append((values == lv).astype(np.float64))
        else:
            try:
                values = series.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DesignError(f"feature {feat!r} is not numeric") from None
            if not np.isfinite(values).all():
                raise DesignError(f"feature {feat!r} has missing or infinite values")
            cols.append(values)
    if not cols:
        return np.empty((n, 0))
    return np.column_stack(cols)
