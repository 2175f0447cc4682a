"""Centralized reference: the whole model, all sources' data, one process, no network."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DatasetMissing, load_dataset
from ..paradigms import Setup
from ..paradigms.base import correct_count, follow_schedule, make_optimizer, train_on_server, whole_model
from ..schedule import batches, evaluation_due, source_indices, steps_per_epoch, test_subset
from ..roleplan import role_name
from .runtime import RoleFailed, Runtime


class Trainer:
    """The centralized reference. Its one entry point is run()."""

    def __init__(self, args):
        self.rt = Runtime(args, "trainer", role_name("trainer"))

    def run(self) -> int:
        return self.rt.run(self.body)

    def body(self) -> None:
        rt = self.rt
        spec = rt.spec
        try:
            data = load_dataset(spec.dataset, spec.seed)
        except DatasetMissing as err:
            raise RoleFailed(str(err), code=2) from None
        everything = np.concatenate(source_indices(spec, data))
        try:
            steps = steps_per_epoch(len(everything), spec, cap_scale=spec.sources.replicas)
        except ValueError as err:
            raise RoleFailed(str(err), code=2) from None
        setup = Setup(rt.experiment, data.meta)
        rt.limit(rt.plan.device("trainer"))
        model = whole_model(setup)
        opt = make_optimizer(model.parameters(), spec.training)
        test_x, test_y = test_subset(spec, data)
        rt.log.write(
            "plan",
            planned_steps=steps * spec.training.epochs,
            samples=len(everything),
            epochs=spec.training.epochs,
            edge_blocks=None,
        )
        step = 0
        for epoch in range(spec.training.epochs):
            rt.metrics.epoch.labels(**rt.metrics.base).set(epoch)
            for _, idx in batches(everything, spec, epoch, 0, steps):
                x, y = data.meta.normalize(data.train_x[idx]), data.train_y[idx]
                follow_schedule(opt, spec.training, epoch)
                o = train_on_server(model, opt, x, y)
                phases = {"forward": o.forward_s, "backward": o.backward_s}
                rt.metrics.step(len(y), phases, o.loss)
                rt.log.write(
                    "step",
                    epoch=epoch,
                    step=step,
                    samples=len(y),
                    loss=o.loss,
                    accuracy=o.correct / len(y),
                    lr=opt.param_groups[0]["lr"],
                    duration_s=o.forward_s + o.backward_s,
                    **{f"phase_{k}_s": v for k, v in phases.items()},
                )
                step += 1
            if not evaluation_due(spec, epoch):
                continue
            t0 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                out = model(data.meta.normalize(test_x))
                acc = correct_count(out, test_y) / len(test_y)
                loss = float(F.cross_entropy(out, test_y))
            model.train()
            rt.metrics.accuracy.labels(**rt.metrics.base, exit="final").set(acc)
            rt.log.write(
                "eval",
                epoch=epoch,
                step=step,
                samples=len(test_y),
                loss=loss,
                accuracy=acc,
                exit="final",
                duration_s=time.perf_counter() - t0,
            )


def run(args) -> int:
    return Trainer(args).run()
