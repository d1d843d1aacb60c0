"""Every holder of the Iwamizawa example has a node config and a policy that load."""

from pathlib import Path

from nodes.service import load_node_config
from policies.model import load_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"
LIVING = {"watching_over", "transport_trips", "shopping_support", "evacuation_support", "telework"}
HOLDERS = {
    "city": {"checkups", "infant_checkups"} | LIVING,
    "city-hospital": {"births"},
    "dairy": {"dairy_intake"},
    "drugstore": {"purchases"},
    "insurer": {"checkups"},
    "women-clinic": {"births"},
}


def test_every_holder_has_a_node_config_reading_its_mapping_and_a_policy():
    assert {p.stem for p in (EXAMPLES / "nodes").glob("*.toml")} == set(HOLDERS)
    for name, domains in HOLDERS.items():
        config = load_node_config(EXAMPLES / "nodes" / f"{name}.toml")
        assert config.name == name
        assert config.data_dir == EXAMPLES / "nodes" / "data" / name / "mapping.toml"
        assert set(config.domains or ()) == domains  # declared in the node config
        policy = load_policy(EXAMPLES / "policies" / f"{name}.toml")
        assert domains <= set(policy.domains)
