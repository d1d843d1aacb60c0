"""Our SecAgg+ settings layer, and Flower's SecAgg+ run through it on the embedded engine."""

import numpy as np
import pytest

from federation.errors import ValueRangeError
from federation.evaluation import local_evaluation
from federation.secagg import MODULUS_RANGE, SecAggSettings, check_range, quantization_range_for
from federation.training_round import TrainingRecorder, pack_update


@pytest.mark.parametrize("n_nodes", [2, 3, 5, 50, 1000])
def test_quantization_range_never_wraps(n_nodes):
    q = quantization_range_for(n_nodes)
    assert (n_nodes + 1) * q < MODULUS_RANGE
    assert q & (q - 1) == 0  # a power of two


def test_settings_for_job_derive_max_weight_and_refuse_bad_values():
    s = SecAggSettings.for_job(3, 1500)
    assert s.max_weight == 2048
    assert s.resolution == pytest.approx(16 / s.quantization_range)
    with pytest.raises(ValueError, match="n_nodes"):
        SecAggSettings.for_job(1, 100)
    with pytest.raises(ValueError, match="max_records"):
        SecAggSettings.for_job(3, 0)
    with pytest.raises(ValueError, match="clipping_range"):
        SecAggSettings(n_nodes=3, max_weight=8, clipping_range=float("nan"))


@pytest.mark.parametrize(
    ("arrays", "n", "match"),
    [
        ([np.array([0.0, 9.0])], 10, "above the clipping range"),
        ([np.array([np.nan])], 10, "NaN"),
        ([np.array([1.0])], 5000, "exceeds the job's max_weight"),
    ],
)
def test_check_range_refuses_what_secagg_would_clip(arrays, n, match):
    with pytest.raises(ValueRangeError, match=match):
        check_range(arrays, n, 8.0, 1024)


def test_check_range_accepts_in_range():
    check_range([np.array([-8.0, 0.0, 7.9])], 1024, 8.0, 1024)


N_NODES = 3
SIZES = [300, 700, 500]


def _update(i: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + i)
    return [rng.uniform(-2, 2, size=(1, 4)), rng.uniform(-2, 2, size=(1,))]


@pytest.mark.slow
def test_secagg_round_server_never_sees_an_individual_update():
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp

    from coordinator.server_app import RunOutcome, build_training_server_app
    from federation.embedded import run_embedded

    settings = SecAggSettings.for_job(N_NODES, max(SIZES))
    evaluation = local_evaluation(np.linspace(0.05, 0.95, 10), np.array([0, 1] * 5))

    class Client(NumPyClient):
        def __init__(self, i):
            self.i = i

        def fit(self, parameters, config):
            params = _update(self.i) if config["phase"] == "train" else parameters
            return (
                pack_update(params, evaluation, SIZES[self.i]),
                SIZES[self.i],
                {"node": f"n{self.i}"},
            )

    client_app = ClientApp(
        client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
        mods=[secaggplus_mod],
    )
    recorder, outcome = TrainingRecorder(), RunOutcome()
    inner = build_training_server_app(
        initial=[np.zeros((1, 4)), np.zeros(1)],
        n_nodes=N_NODES,
        rounds=1,
        min_nodes=N_NODES,
        secagg=settings,
        fit_config={},
        recorder=recorder,
        outcome=outcome,
    )
    replies: list = []
    outer = ServerApp()

    @outer.main()
    def main(grid, context):
        original = grid.send_and_receive

        def recording(messages, *args, **kwargs):
            out = list(original(messages, *args, **kwargs))
            replies.extend(m for m in out if m.has_content())
            return out

        grid.send_and_receive = recording
        inner(grid, context)

    run_embedded(outer, client_app, N_NODES)
    assert outcome.status == "succeeded", outcome.reason

    individual = [np.concatenate([a.ravel() for a in _update(i)]) for i in range(N_NODES)]
    total = sum(SIZES)
    plain = sum(SIZES[i] * individual[i] for i in range(N_NODES)) / total
    secure = np.concatenate([a.ravel() for a in recorder.final_parameters])
    # Equal to the plain weighted mean within the quantisation error.
    tol = 4 * N_NODES * settings.resolution * settings.max_weight / total
    np.testing.assert_allclose(secure, plain, atol=tol)
    assert np.max(np.abs(secure - plain)) < 1e-5

    # Nothing the server received holds an individual update in the clear.
    seen = 0
    masked_vectors = 0
    from flwr.common import bytes_to_ndarray

    for msg in replies:
        for record in msg.content.array_records.values():
            for arr in record.values():
                vec = arr.numpy().ravel().astype(float)
                seen += 1
                for ind in individual:
                    if vec.size >= ind.size:
                        assert not np.allclose(vec[: ind.size], ind, atol=1e-3)
        for cfg in msg.content.config_records.values():
            for value in cfg.values():
                if not (isinstance(value, list) and value and isinstance(value[0], bytes)):
                    continue
                try:
                    arrays = [bytes_to_ndarray(b) for b in value]
                except Exception:  # encrypted key shares, not arrays
                    continue
                masked = np.concatenate([a.ravel() for a in arrays[1:]]).astype(float)
                decoded = masked * settings.resolution - settings.clipping_range
                masked_vectors += 1
                for i, ind in enumerate(individual):
                    weighted = ind * SIZES[i] / settings.max_weight
                    assert not np.allclose(decoded[: ind.size], weighted, atol=0.05)
    assert masked_vectors >= N_NODES
    assert len(recorder.rounds) == 2  # one training round and the final evaluation
    assert recorder.rounds[0].metrics["n"] == 3 * 10  # evaluation summed over the 3 nodes
