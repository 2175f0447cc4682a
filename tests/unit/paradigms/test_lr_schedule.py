"""training.schedule: the lr over epochs. cosine is torch's CosineAnnealingLR stepped once per
epoch over training.epochs; every role that trains puts its optimizer at the epoch's lr
(the record's lr column is checked in test_run_local's federated runs)."""

import math

import pytest

from splitbench.data import load_dataset
from splitbench.paradigms import Setup, get_paradigm
from splitbench.paradigms.base import lr_at
from splitbench.schedule import batches, source_indices
from splitbench.spec import Experiment, SpecError, TrainingSpec, load_experiment
from support import experiment_doc


def cosine(lr, epoch, epochs):
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def test_cosine_follows_the_closed_form_and_none_keeps_the_lr():
    t = TrainingSpec(lr=0.05, epochs=6, schedule="cosine")
    assert [lr_at(t, e) for e in range(6)] == pytest.approx([cosine(0.05, e, 6) for e in range(6)])
    assert lr_at(t, 5) < lr_at(t, 4) < lr_at(t, 0) == 0.05
    assert [lr_at(TrainingSpec(lr=0.05, epochs=6), e) for e in range(6)] == [0.05] * 6
    assert TrainingSpec().schedule == "none"


def test_a_bad_schedule_is_named(write_spec):
    doc = experiment_doc(training={"epochs": 2, "schedule": "step"})
    with pytest.raises(SpecError, match="schedule"):
        load_experiment(write_spec(doc))
    ok = experiment_doc(training={"epochs": 2, "schedule": "cosine"})
    assert load_experiment(write_spec(ok)).spec.training.schedule == "cosine"


@pytest.mark.parametrize(
    "paradigm", [{"name": "split", "splitAfter": 4}, {"name": "hfsl", "splitAfter": 4, "localEpochs": 1}]
)
def test_source_and_server_train_their_last_step_at_the_cosine_lr(paradigm):
    epochs = 3
    exp = Experiment.model_validate(
        experiment_doc(
            paradigm=paradigm, training={"epochs": epochs, "batchSize": 32, "lr": 0.04, "schedule": "cosine"}
        )
    )
    data = load_dataset(exp.spec.dataset, 0)
    p = get_paradigm(Setup(exp, data.meta, None, "source-0", steps_per_epoch=2))
    no_round = lambda msg: pytest.fail("no round ends in this test")  # hfsl needs an aggregator link
    server = p.server(aggregate=no_round)
    seen = []

    def call(msg):
        out = server.train(msg)
        seen.append((msg.epoch, server.opt.param_groups[0]["lr"]))
        return out.reply, 0.0, 0.0

    source = p.source(call, aggregate=no_round)
    idx = source_indices(exp.spec, data)[0]
    step = 0
    for epoch in range(epochs):
        for _, b in batches(idx, exp.spec, epoch, 0, 1):  # one step an epoch: no round ends mid-test
            source.train_step(data.train_x[b], data.train_y[b], epoch, step)
            assert source.lr() == pytest.approx(cosine(0.04, epoch, epochs))
            step += 1
    assert seen == [(e, pytest.approx(cosine(0.04, e, epochs))) for e in range(epochs)]
    assert seen[-1][1] == pytest.approx(0.01)  # 0.04 x (1 + cos(2 pi / 3)) / 2
