"""Training runs as chains: MGRIT run to termination gives serial SGD's weights bit for bit."""

import pytest
import torch

from models.training_runs import RunConfig, TrainingRun
from solvers.mgrit import MGRITConfig, mgrit, sequential_chain


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mgrit_run_to_termination_equals_serial_sgd(momentum: float) -> None:
    run = TrainingRun(RunConfig(problem="regression", steps=48, batch_size=8, learning_rate=0.01, momentum=momentum))
    serial = sequential_chain(run.step, run.u0, 48)
    assert run.full_loss(serial[-1]) < run.full_loss(run.u0)  # it trains
    result = mgrit(run.step, run.u0, 48, MGRITConfig(coarsening=4, levels=3), coarse=run.coarse)
    assert result.exact
    assert result.converged
    assert torch.equal(result.states, serial)
    assert result.iterations <= 12  # the finite-termination bound, ceil(48 / 4)


def test_one_step_is_the_same_bits_alone_or_in_company() -> None:
    run = TrainingRun(RunConfig(problem="regression", steps=8, batch_size=4))
    states = sequential_chain(run.step, run.u0, 8)
    together = run.step(torch.arange(8), states[:-1])
    alone = torch.stack([run.step(torch.tensor([k]), states[k : k + 1])[0] for k in range(8)])
    assert torch.equal(together, alone)
    assert torch.equal(together, states[1:])


@pytest.mark.parametrize(("kwargs", "field"), [({"problem": "x"}, "problem"), ({"coarse": "x"}, "coarse"),
                                               ({"momentum": 1.0}, "momentum")])  # fmt: skip
def test_bad_run_configurations_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RunConfig(**kwargs)  # type: ignore[arg-type]
