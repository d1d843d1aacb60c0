"""Policy TOML: loading, round trip, and validation errors that name the field."""

from pathlib import Path

import pytest

from policies import (
    NodePolicy,
    PolicyError,
    default_policy,
    is_identifier,
    load_policy,
    loads_policy,
    policy_to_toml,
)

DATA = Path(__file__).parent / "data"


def test_load_example_policy():
    policy = load_policy(DATA / "city_policy.toml")
    assert policy.min_cohort == 50
    assert policy.budget["births"].epsilon == 10.0
    assert policy.budget["checkups"].period == "month"
    assert policy.domains["checkups"].features == "*"
    assert policy.approval.automatic_for == ("hokkaido-u",)
    assert "mother_code" in policy.never_usable()


@pytest.mark.parametrize("policy", [default_policy(), load_policy(DATA / "city_policy.toml")])
def test_policy_round_trips_through_toml(policy, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(policy_to_toml(policy), encoding="utf-8")
    assert load_policy(path) == policy


def test_default_policy_is_cautious():
    policy = default_policy()
    assert policy.approval.mode == "manual"
    assert policy.require_secure_aggregation and policy.require_dp
    assert not policy.purposes.commercial
    assert set(policy.domains) == set(policy.budget)


BAD = [
    ("min_cohort = 0", "min_cohort"),
    ("min_cell_count = -3", "min_cell_count"),
    ("max_epsilon_per_job = nan", "max_epsilon_per_job"),
    ("max_delta_per_job = 1.5", "max_delta_per_job"),
    ("colour = 'red'", "colour"),
    ('[purposes]\nallowed = ["XYZ"]', "purposes.allowed"),
    ('[purposes]\ncommercial = "maybe"', "purposes.commercial"),
    ('[requesters]\ntypes = ["alien"]', "requesters.types"),
    ('[jobs]\nkinds = ["mine"]', "jobs.kinds"),
    (
        '[domains.births]\nfeatures = ["name"]\n[budget.births]\nepsilon = 1',
        "domains.births.features",
    ),
    (
        '[domains.births]\nfeatures = ["mother_name"]\n[budget.births]\nepsilon = 1',
        "domains.births.features",
    ),
    ('[domains.births]\nfeatures = "all"\n[budget.births]\nepsilon = 1', "domains.births.features"),
    (
        '[domains.births]\nfeatures = ["bad-col"]\n[budget.births]\nepsilon = 1',
        "domains.births.features",
    ),
    ('[domains.Births]\nfeatures = "*"', "domains"),
    ('[domains.births]\nfeatures = "*"', "budget.births"),
    ("[domains.births]\n[budget.births]\nepsilon = -1", "budget.births.epsilon"),
    ("[domains.births]\n[budget.births]\nepsilon = 1\ndelta = 2", "budget.births.delta"),
    ('[domains.births]\n[budget.births]\nepsilon = 1\nperiod = "week"', "budget.births.period"),
    ("[budget.births]\nepsilon = 1", "budget.births"),
    ('[approval]\nmode = "sometimes"', "approval.mode"),
    ('[approval]\nmode = "automatic_for"', "approval.automatic_for"),
    ('[approval]\nmode = "manual"\nautomatic_for = ["x"]', "approval.automatic_for"),
    (
        '[identifiers]\nextra = ["code"]\n[domains.births]\nfeatures = ["code"]\n'
        "[budget.births]\nepsilon = 1",
        "domains.births.features",
    ),
]


@pytest.mark.parametrize(("text", "field"), BAD)
def test_invalid_policy_error_names_the_field(text, field):
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="not valid TOML"):
        loads_policy("x = [")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="^policy: nests arrays or tables too deeply"):
        loads_policy("x = " + "[" * 5000 + "]" * 5000)


def test_every_problem_is_listed():
    with pytest.raises(PolicyError) as info:
        loads_policy("min_cohort = 0\nmin_cell_count = 0")
    assert info.value.field == "min_cohort"
    assert "min_cell_count" in str(info.value)


@pytest.mark.parametrize(
    "column",
    [
        "name",
        "NAME",
        "subject",
        "infant",
        "address",
        "phone",
        "email",
        "birth_date",
        "notes",
        "free_text",
        "pseudonym",
        "mother_name",
        "home_address",
        "clinical_notes",
        "my_number",
    ],
)
def test_identifiers_are_recognised(column):
    assert is_identifier(column)


@pytest.mark.parametrize(
    "column", ["maternal_age", "birth_weight_g", "parity", "infant_sex", "smoking"]
)
def test_ordinary_columns_are_not_identifiers(column):
    assert not is_identifier(column)


def test_policy_is_frozen():
    policy = NodePolicy()
    with pytest.raises(ValueError):
        policy.min_cohort = 1  # type: ignore[misc]
