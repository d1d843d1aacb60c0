"""GLM formulas (``lbw ~ bmi_pre + smoking + C(parity_group) + maternal_age:smoking``).

A formula is parsed and expanded by formulaic; this module restricts what it may say
and makes every node build the *same* design matrix from public information only.

What a formula may hold, term by term (interactions ``a:b`` and ``a*b`` of these, ``- 1``
or ``0 +`` to drop the intercept):

- a column name (numeric);
- ``log(x)``, ``log2(x)``, ``log10(x)``, ``exp(x)`` of a column (monotone, so the public
  range of ``x`` bounds the term, which sizes the secure sum's scale);
- ``C(x)`` or ``C(x, Treatment(reference=level))``: a categorical column, treatment-coded
  against the first declared level or the one named. Its levels are public: the job's
  ``[glm] levels`` or the data model's declared categories (a 0/1 flag: ``0, 1``),
  never one node's data, so a level missing at one node shifts no column;
- ``offset(x)`` or ``offset(log(x))`` (one at most): a term with coefficient 1, as for
  the exposure of a rate model.

Any other call, attribute or operator is refused before anything is evaluated: formulaic
evaluates factor expressions as Python, so the text a researcher sends never reaches it
unchecked. Stateful transforms (``scale``, ``center``, splines) are refused because they
would learn their state from one node's data.

Term names are formulaic's, which are patsy's (``Intercept``, ``C(x)[T.2]``,
``maternal_age:smoking``): a released coefficient lines up by name with
``statsmodels.formula.api.glm`` on the same data.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.analytics.design import DesignError

__all__ = ["FormulaDesign", "GlmFormula", "parse_formula"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Monotone transforms of one column a term may apply.
_MONOTONE = {"log": np.log, "log2": np.log2, "log10": np.log10, "exp": np.exp}
#: Longest formula accepted.
MAX_FORMULA = 2000

Level = int | str


@dataclass(frozen=True)
class _Factor:
    """One factor of a term: a column, maybe transformed or categorical."""

    expr: str
    column: str
    transform: str | None = None
    categorical: bool = False
    reference: Level | None = None


def _literal(node: ast.expr, what: str) -> Level:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
        if isinstance(node.value, bool):
            raise DesignError(f"glm.formula: {what} must be a level (a number or a string)")
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    raise DesignError(f"glm.formula: {what} must be a level (a number or a string)")


def _column(node: ast.expr, expr: str) -> str:
    if isinstance(node, ast.Name) and _NAME.match(node.id):
        return node.id
    raise DesignError(f"glm.formula: {expr!r}: only a column name may stand here")


def _factor(expr: str, *, offset_ok: bool) -> _Factor:
    """Return the checked factor of ``expr``, or raise :class:`DesignError` naming it."""
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise DesignError(f"glm.formula: {expr!r} is not a term this formula can hold") from None
    if isinstance(node, ast.Name):
        return _Factor(expr, _column(node, expr))
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise DesignError(
            f"glm.formula: {expr!r}: a term is a column, log/exp of a column, C(column) "
            "or offset(...)"
        )
    fn, args, kw = node.func.id, node.args, node.keywords
    if fn in _MONOTONE and len(args) == 1 and not kw:
        return _Factor(expr, _column(args[0], expr), transform=fn)
    if fn == "offset" and offset_ok and len(args) == 1 and not kw:
        inner = _factor(ast.unparse(args[0]), offset_ok=False)
        if inner.categorical:
            raise DesignError(f"glm.formula: {expr!r}: an offset is numeric")
        return _Factor(expr, inner.column, transform=inner.transform)
    if fn == "C" and 1 <= len(args) <= 2 and not kw:
        column = _column(args[0], expr)
        reference: Level | None = None
        if len(args) == 2:
            contrast = args[1]
            if not (
                isinstance(contrast, ast.Call)
                and isinstance(contrast.func, ast.Name)
                and contrast.func.id == "Treatment"
                and len(contrast.args) + len(contrast.keywords) == 1
                and all(k.arg == "reference" for k in contrast.keywords)
            ):
                raise DesignError(
                    f"glm.formula: {expr!r}: the only contrast is Treatment(reference=level)"
                )
            value = contrast.args[0] if contrast.args else contrast.keywords[0].value
            reference = _literal(value, f"{expr!r}'s reference")
        return _Factor(expr, column, categorical=True, reference=reference)
    if fn == "C":
        raise DesignError(
            f"glm.formula: {expr!r}: write C(column) or C(column, Treatment(reference=level)); "
            "levels come from [glm.levels] or the data model"
        )
    if fn in _MONOTONE or fn == "offset":
        raise DesignError(f"glm.formula: {expr!r}: {fn}() takes one column")
    raise DesignError(
        f"glm.formula: {expr!r}: {fn}() is not allowed (allowed: C, Treatment, offset, "
        f"{', '.join(sorted(_MONOTONE))})"
    )


@dataclass(frozen=True)
class GlmFormula:
    """A checked GLM formula.

    Attributes:
        text: the formula as written.
        label: the outcome column (the left-hand side).
        rhs: the right-hand side without the offset, as formulaic reads it.
        terms: the factors of each right-hand-side term (the intercept has none).
        offset: the offset's factor, or None.
        intercept: whether the model has an intercept.
    """

    text: str
    label: str
    rhs: str
    terms: tuple[tuple[_Factor, ...], ...]
    offset: _Factor | None
    intercept: bool

    @property
    def columns(self) -> list[str]:
        """Return the data columns the right-hand side reads (offset included), in order."""
        cols = [f.column for term in self.terms for f in term]
        if self.offset is not None:
            cols.append(self.offset.column)
        return list(dict.fromkeys(cols))

    @property
    def categorical(self) -> dict[str, Level | None]:
        """Return each categorical column and the reference level its ``C()`` names."""
        out: dict[str, Level | None] = {}
        for term in self.terms:
            for f in term:
                if not f.categorical:
                    continue
                if f.column in out and out[f.column] != f.reference:
                    raise DesignError(
                        f"glm.formula: {f.column!r} is coded against two reference levels"
                    )
                out[f.column] = f.reference
        numeric = {f.column for term in self.terms for f in term if not f.categorical}
        both = sorted(numeric & set(out))
        if both:
            raise DesignError(f"glm.formula: {both} used both as a number and in C()")
        return out


def parse_formula(text: str) -> GlmFormula:
    """Return the checked formula ``text`` (nothing is evaluated).

    Raises:
        DesignError: the formula is malformed, names no single outcome column, or holds
            a term, call or operator outside what the module docstring lists.
    """
    import formulaic
    from formulaic.errors import FormulaicError

    if len(text) > MAX_FORMULA:
        raise DesignError(f"glm.formula: longer than {MAX_FORMULA} characters")
    lhs_text, sep, rhs_text = text.partition("~")
    if not sep or "~" in rhs_text:
        raise DesignError("glm.formula: write it as 'outcome ~ terms' (one '~')")
    label = lhs_text.strip()
    if not _NAME.match(label):
        raise DesignError(f"glm.formula: the outcome {label!r} must be one column name")
    try:
        parsed = formulaic.Formula(rhs_text)
    except (FormulaicError, SyntaxError, ValueError) as exc:
        raise DesignError(f"glm.formula: {str(exc).splitlines()[0]}") from None
    terms: list[tuple[_Factor, ...]] = []
    kept: list[str] = []
    offset: _Factor | None = None
    intercept = False
    for term in parsed:
        exprs = [f.expr for f in term.factors]
        if exprs == ["1"]:
            intercept = True
            continue
        if len(exprs) == 1 and exprs[0].replace(" ", "").startswith("offset("):
            if offset is not None:
                raise DesignError("glm.formula: at most one offset(...)")
            offset = _factor(exprs[0], offset_ok=True)
            continue
        terms.append(tuple(_factor(e, offset_ok=False) for e in exprs))
        kept.append(str(term))
    if not terms and not intercept:
        raise DesignError("glm.formula: the model has no term")
    rhs = " + ".join((["1"] if intercept else ["0"]) + kept)
    formula = GlmFormula(text, label, rhs, tuple(terms), offset, intercept)
    if label in formula.columns:
        raise DesignError(f"glm.formula: the outcome {label!r} is also a term")
    _ = formula.categorical  # checks a column is not coded two ways
    return formula


def _factor_bound(f: _Factor, ranges: Mapping[str, tuple[float, float]]) -> float:
    """Return a public bound of ``|f|`` over the column's public range."""
    if f.categorical:
        return 1.0
    rng = ranges.get(f.column)
    if rng is None:
        raise DesignError(f"glm.bounds: column {f.column!r} needs a public range [low, high]")
    low, high = float(rng[0]), float(rng[1])
    if f.transform is None:
        return max(abs(low), abs(high), 1e-12)
    if f.transform.startswith("log") and low <= 0:
        raise DesignError(
            f"glm.bounds: {f.expr!r} needs {f.column!r}'s public range above 0 (it is {low:g})"
        )
    fn = _MONOTONE[f.transform]
    ends = [float(fn(low)), float(fn(high))]
    if not all(math.isfinite(v) for v in ends):
        raise DesignError(f"glm.bounds: {f.expr!r} overflows over {f.column!r}'s public range")
    return max(abs(ends[0]), abs(ends[1]), 1e-12)


class FormulaDesign:
    """The public design of a formula: term names, their bounds, and each node's matrices.

    Built from public information only: the formula, the public levels of its
    categorical columns, and (for the bounds) the public ranges of its numeric ones.

    Raises:
        DesignError: a categorical column has no public levels, or a reference level
            is not among them.
    """

    def __init__(
        self, formula: GlmFormula, levels: Mapping[str, Sequence[Level]], weights: str | None
    ) -> None:
        import formulaic

        self.formula = formula
        self.weights = weights
        self.levels: dict[str, list[Level]] = {}
        for column, reference in formula.categorical.items():
            declared = list(levels.get(column, ()))
            if len(declared) < 2:
                raise DesignError(
                    f"glm.levels: C({column}) needs its public levels "
                    "(the job's [glm.levels] or the data model's categories)"
                )
            if reference is not None and reference not in declared:
                raise DesignError(
                    f"glm.formula: reference level {reference!r} of {column!r} "
                    f"is not among its levels {declared}"
                )
            self.levels[column] = declared
        rows = max([2] + [len(v) for v in self.levels.values()])
        skeleton = pd.DataFrame(
            {
                c: self._categorical(c, [lv[i % len(lv)] for i in range(rows)])
                if (lv := self.levels.get(c))
                else np.arange(1.0, rows + 1.0)
                for c in formula.columns
            }
        )
        matrix = formulaic.model_matrix(formula.rhs, skeleton)
        self.term_names: list[str] = [str(c) for c in matrix.columns]
        self._term_columns: list[tuple[tuple[_Factor, ...], list[int]]] = []
        by_text = {str(t): i for i, t in enumerate(formula.rhs.split(" + "))}
        for term, indices in matrix.model_spec.term_indices.items():
            text = str(term)
            if text == "1":
                continue
            factors = formula.terms[by_text[text] - 1]
            self._term_columns.append((factors, list(indices)))

    def _categorical(self, column: str, values: Sequence[Any]) -> pd.Categorical:
        return pd.Categorical(values, categories=self.levels[column])

    def term_bounds(self, ranges: Mapping[str, tuple[float, float]]) -> list[float]:
        """Return a public bound of ``|x_j|`` per design column (1 for intercept and dummies).

        Raises:
            DesignError: a numeric column has no public range, or a ``log`` term's range
                reaches 0.
        """
        bounds = [1.0] * len(self.term_names)
        for factors, indices in self._term_columns:
            bound = math.prod(_factor_bound(f, ranges) for f in factors)
            for j in indices:
                bounds[j] = bound
        return bounds

    def offset_bound(self, ranges: Mapping[str, tuple[float, float]]) -> float:
        """Return a public bound of ``|offset|`` (0 without an offset).

        Raises:
            DesignError: the offset's column has no public range.
        """
        off = self.formula.offset
        return 0.0 if off is None else _factor_bound(off, ranges)

    def matrices(
        self, frame: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Return a node's ``(X, offset, weights)`` (None where the job has none).

        Raises:
            DesignError: a column is missing or not numeric, a value is missing or
                infinite, a categorical value is not a public level, a weight is negative,
                or the columns differ from the public term names.
        """
        import formulaic

        data: dict[str, Any] = {}
        for column in self.formula.columns + ([self.weights] if self.weights else []):
            if column not in frame.columns:
                raise DesignError(f"column {column!r} is not a column of the data")
            series = frame[column]
            if column in self.levels:
                known = series.isin(self.levels[column]).to_numpy()
                if not known.all():
                    bad = sorted({str(v) for v in series[~known]})[:5]
                    raise DesignError(
                        f"column {column!r}: value(s) {bad} not among the public levels "
                        f"{self.levels[column]}"
                    )
                data[column] = self._categorical(column, series.tolist())
                continue
            try:
                values = series.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DesignError(f"column {column!r} is not numeric") from None
            if not np.isfinite(values).all():
                raise DesignError(f"column {column!r} has missing or infinite values")
            data[column] = values
        table = pd.DataFrame(data, index=range(len(frame)))
        x = formulaic.model_matrix(self.formula.rhs, table)
        if [str(c) for c in x.columns] != self.term_names:
            raise DesignError("the data's design columns differ from the public term names")
        design = x.to_numpy(dtype=np.float64)
        offset = None
        if self.formula.offset is not None:
            f = self.formula.offset
            raw = table[f.column].to_numpy(dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                offset = raw if f.transform is None else _MONOTONE[f.transform](raw)
            if not np.isfinite(offset).all():
                raise DesignError(f"offset {f.expr!r} is missing or infinite for some rows")
        weights = None
        if self.weights:
            weights = table[self.weights].to_numpy(dtype=np.float64)
            if (weights < 0).any():
                raise DesignError(f"weights {self.weights!r}: a frequency weight is negative")
        if not np.isfinite(design).all():
            raise DesignError("a design column is missing or infinite for some rows")
        return design, offset, weights
