from pathlib import Path

import pytest

from federation.errors import JobSpecError
from federation.spec import load_job_spec, parse_job_spec

BASE = {"kind": "train", "features": ["a", "b"], "label": "y", "privacy": {"epsilon": 3.0}}


def _with(**changes):
    spec = {**BASE, **changes}
    return spec


def test_parse_job_spec_defaults_secure_aggregation_on():
    spec = parse_job_spec(BASE)
    assert spec.secure_aggregation.enabled is True
    assert spec.privacy.delta == 1e-5
    assert spec.columns() == ["a", "b", "y"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"privacy": {"epsilon": 0}}, "privacy.epsilon"),
        ({"privacy": {"epsilon": -1}}, "privacy.epsilon"),
        ({"privacy": {"epsilon": 1, "delta": 1}}, "privacy.delta"),
        ({"privacy": {"epsilon": float("nan")}}, "privacy.epsilon"),
        ({"privacy": {"epsilon": 1e9}}, "privacy.epsilon"),
        ({"label": "a"}, "label"),
        ({"features": []}, "features"),
        ({"features": ["a b"]}, "features"),
        ({"features": ["a", "a"]}, "features"),
        ({"kind": "deep"}, "kind"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": "many"}, "rounds"),
        ({"purpose": {"duo": ["XYZ"]}}, "purpose.duo"),
        ({"purpose": {"requester_type": "commercial"}}, "purpose"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"privacy": None}, "privacy"),
        ({"complete_case": True}, "complete_case"),  # BASE is a training job
        ({"complete_case": "yes"}, "complete_case"),
    ],
)
def test_parse_job_spec_bad_field_named(changes, field):
    with pytest.raises(JobSpecError) as err:
        parse_job_spec(_with(**changes))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_load_job_spec_malformed_toml(tmp_path: Path):
    path = tmp_path / "job.toml"
    path.write_text('kind = "train"\nfeatures = [\n')
    with pytest.raises(JobSpecError, match="not valid TOML"):
        load_job_spec(path)


def test_load_job_spec_toml_roundtrip(tmp_path: Path):
    path = tmp_path / "job.toml"
    path.write_text(
        'kind = "train"\nfeatures = ["a"]\nlabel = "y"\nrounds = 3\n'
        "[privacy]\nepsilon = 2.5\ndelta = 1e-6\nmax_grad_norm = 0.5\n"
        "[secure_aggregation]\nenabled = false\n"
    )
    spec = load_job_spec(path)
    assert spec.rounds == 3 and spec.privacy.max_grad_norm == 0.5
    assert spec.secure_aggregation.enabled is False
