"""FedAvg's arithmetic and the federated spec rules."""

import pytest
import torch
from torch import nn

from splitbench.paradigms.federated import flatten, load_flat, weighted_average
from splitbench.spec import Experiment
from support import experiment_doc


def test_weighted_average_is_fedavg():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    assert weighted_average([a, b], [1, 3]).tolist() == [2.5, 5.0]  # 1/4 a + 3/4 b
    with pytest.raises(ValueError, match="differ in size"):
        weighted_average([a, torch.zeros(3)], [1, 1])
    with pytest.raises(ValueError, match="no samples"):
        weighted_average([a, b], [0, 0])


def test_flat_state_round_trips_parameters_and_batch_norm_statistics():
    torch.manual_seed(0)
    src = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    src[1].running_mean.fill_(0.5)
    dst = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    load_flat(dst, flatten(src))
    for (k, v), w in zip(src.state_dict().items(), dst.state_dict().values()):
        if v.is_floating_point():
            assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="expected"):
        load_flat(dst, torch.zeros(3))


def test_federated_spec_rules():
    ok = experiment_doc(
        paradigm={"name": "hfsl", "splitAfter": 2, "localEpochs": 2}, training={"epochs": 4}, server={"replicas": 2}
    )
    assert Experiment.model_validate(ok).spec.paradigm.local_epochs == 2
    assert Experiment.model_validate(experiment_doc(paradigm={"name": "hfsl", "splitAfter": 2})).spec.server_count == 2
    with pytest.raises(ValueError, match="one medium device per source"):
        Experiment.model_validate(experiment_doc(paradigm={"name": "hfsl", "splitAfter": 2}, server={"replicas": 1}))
    with pytest.raises(ValueError, match="whole number of rounds"):
        Experiment.model_validate(experiment_doc(paradigm={"name": "fedavg", "localEpochs": 2}, training={"epochs": 3}))
    with pytest.raises(ValueError, match="needs 1"):
        Experiment.model_validate(experiment_doc(server={"replicas": 2}))
