"""A node lost during SecAgg+ key set-up: the round is retried, or the job fails with the reason."""

import numpy as np
import pytest

from federation.evaluation import local_evaluation
from federation.secagg import SecAggSettings
from federation.training_round import TrainingRecorder, pack_update

N_NODES = 3


def _run(
    tmp_path,
    fail_times: int,
    max_retries: int,
    stage: str = "setup",
    threshold: float = 1.0,
    min_nodes: int = N_NODES,
):
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    from coordinator.server_app import RunOutcome, build_training_server_app
    from federation.embedded import run_embedded

    evaluation = local_evaluation(np.linspace(0.05, 0.95, 10), np.array([0, 1] * 5))

    class Client(NumPyClient):
        def fit(self, parameters, config):
            return pack_update([p + 0.1 for p in parameters], evaluation, 100), 100, {"node": "n"}

    def lose_node_zero_during_setup(msg, ctx, call_next):
        """Node 0 drops out of the key set-up stage its first ``fail_times`` times."""
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if (
            cfg is not None
            and cfg.get("stage") == stage
            and int(ctx.node_config["partition-id"]) == 0
        ):
            counter = tmp_path / "setups"
            seen = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(seen + 1))
            if seen < fail_times:
                raise ConnectionError("node lost during key set-up")
        return call_next(msg, ctx)

    client_app = ClientApp(
        client_fn=lambda ctx: Client().to_client(),
        mods=[lose_node_zero_during_setup, secaggplus_mod],
    )
    settings = SecAggSettings(
        n_nodes=N_NODES,
        max_weight=128,
        reconstruction_threshold=threshold,
        max_retries=max_retries,
        timeout=60,  # generous: a loaded CI machine starts Ray actors slowly
    )
    recorder, outcome = TrainingRecorder(), RunOutcome()
    app = build_training_server_app(
        initial=[np.zeros(3)],
        n_nodes=min_nodes,  # as the deployment ServerApp: sample all, wait for the minimum
        rounds=1,
        min_nodes=min_nodes,
        secagg=settings,
        fit_config={},
        recorder=recorder,
        outcome=outcome,
        expected_nodes=N_NODES,  # every node sampled, node 0 included
    )
    run_embedded(app, client_app, N_NODES)
    return outcome, recorder


@pytest.mark.slow
def test_halted_round_is_retried_and_the_job_completes(tmp_path):
    outcome, recorder = _run(tmp_path, fail_times=1, max_retries=2)
    assert outcome.status == "succeeded", outcome.reason
    assert outcome.retried_rounds == 1
    assert recorder.rounds[0].attempts == 2
    np.testing.assert_allclose(recorder.final_parameters[0], np.full(3, 0.1), atol=1e-5)


@pytest.mark.slow
def test_round_halting_past_its_retries_fails_the_job_with_the_reason(tmp_path):
    outcome, recorder = _run(tmp_path, fail_times=10, max_retries=1)
    assert outcome.status == "failed"
    assert "secure aggregation halted in stage 'setup'" in outcome.reason
    assert "node lost during key set-up" in outcome.reason
    assert recorder.final_parameters is None  # never passed off as a round done


@pytest.mark.slow
def test_node_lost_while_sharing_keys_is_left_out_and_the_round_completes(tmp_path):
    """A node that drops before its key shares reached anyone never entered a mask: the
    round completes with the others (Flower's own unmask stage asks for its shares and
    halts; our workflow leaves it out)."""
    outcome, recorder = _run(
        tmp_path, fail_times=1, max_retries=0, stage="share_keys", threshold=0.6, min_nodes=2
    )
    assert outcome.status == "succeeded", outcome.reason
    assert outcome.retried_rounds == 0
    assert recorder.rounds[0].n_train_total == 200  # two nodes of 100 records
    np.testing.assert_allclose(recorder.final_parameters[0], np.full(3, 0.1), atol=1e-5)


@pytest.mark.slow
def test_retry_leaves_out_the_node_that_failed_while_enough_remain(tmp_path):
    """A node that fails every attempt (dead, still listed online) is left out of the retry."""
    outcome, recorder = _run(tmp_path, fail_times=10, max_retries=1, threshold=1.0, min_nodes=2)
    assert outcome.status == "succeeded", outcome.reason
    assert recorder.rounds[0].attempts == 2  # each round: one halt, then a retry without it
    assert recorder.rounds[0].n_train_total == 200
