"""kopf handlers: the Experiment's lifecycle. Run with
`kopf run -m splitbench_operator.handlers --all-namespaces` (the Helm chart does).

create/resume  validate the spec with the same pydantic model as `splitbench validate`,
               build the children (pure builders) and create them; existing ones are kept
update         a spec edited after creation is not applied: a warning (an Event) says so
timer          roll the pods' and the Job's state up into status.phase / progress / message /
               conditions; when the run ends with a records volume, start the pod that
               prints it back for the executor (builders.records_reader)
delete         remove every child (owner references let the garbage collector do the same)
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import kopf
from pydantic import ValidationError

from splitbench.crd import GROUP, PLURAL, TERMINAL, VERSION
from splitbench.spec import Experiment, SpecError, format_errors

from . import kube
from .builders import Images, RecordsVolume, build, records_reader
from .status import conditions, rollup

INTERVAL = float(os.environ.get("SPLITBENCH_STATUS_INTERVAL", "5"))
RETRY_S = INTERVAL  # a child's name still held by an earlier run's object: try again after this


def images() -> Images:
    """Images and GPU runtime class, as the Helm chart's values set them on the Deployment."""
    return Images(
        edge=os.environ.get("SPLITBENCH_EDGE_IMAGE", Images.edge),
        gpu=os.environ.get("SPLITBENCH_GPU_IMAGE", Images.gpu),
        pull_policy=os.environ.get("SPLITBENCH_PULL_POLICY", Images.pull_policy),
        runtime_class=os.environ.get("SPLITBENCH_RUNTIME_CLASS") or None,
    )


def metrics_namespaces() -> dict | None:
    """The chart's networkPolicy.metricsNamespaceLabels: namespaces that may scrape the roles'
    metrics port (None: none may)."""
    labels = json.loads(os.environ.get("SPLITBENCH_METRICS_NAMESPACE_LABELS") or "{}")
    return labels or None


def records_volume() -> RecordsVolume | None:
    """The chart's records.persistence (a JSON object; None where it is not enabled: the run
    folder is then an emptyDir and the record comes back through the pods' logs)."""
    raw = json.loads(os.environ.get("SPLITBENCH_RECORDS_PERSISTENCE") or "{}")
    if not raw.get("enabled"):
        return None
    return RecordsVolume(
        size=raw.get("size") or RecordsVolume.size,
        storage_class=raw.get("storageClassName") or None,
        access_mode=raw.get("accessMode") or RecordsVolume.access_mode,
    )


def set_status(patch: kopf.Patch, body: kopf.Body, phase: str, reason: str, message: str, **fields) -> None:
    """status.phase and message, the conditions that go with them, and observedGeneration:
    the generation whose spec the children were built from (set when they are; a spec
    edited later is not applied, so the generation the status speaks for stays that one)."""
    before = body.get("status") or {}
    generation = before.get("observedGeneration") if "children" in before else body.metadata.get("generation")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch.status.update(
        phase=phase,
        message=message,
        observedGeneration=generation,
        conditions=conditions(phase, reason, message, before.get("conditions"), now, generation),
        **fields,
    )


def experiment(body: kopf.Body) -> Experiment:
    """The custom resource as the validated spec; a bad spec is a permanent error (retrying
    will not fix it) with the same one-line-per-problem text as `splitbench validate`."""
    doc = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": body.metadata.name, "labels": dict(body.metadata.labels or {})},
        "spec": dict(body.spec),
    }
    try:
        return Experiment.model_validate(doc)
    except ValidationError as err:
        raise kopf.PermanentError(format_errors(err, body.metadata.name).replace("\n", "; ")) from None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.persistence.finalizer = "splitbench.dev/cleanup"
    settings.posting.level = 30  # warnings and errors as Kubernetes events; info stays in the log


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
def apply(body: kopf.Body, uid: str, namespace: str, patch: kopf.Patch, logger, **_) -> None:
    status = body.get("status") or {}
    if status.get("phase") in TERMINAL:
        return  # a finished run resumed after an operator restart: nothing to start again
    records = records_volume()
    try:
        exp = experiment(body)
        objects = build(exp, uid, namespace, images(), metrics_namespaces(), records)
    except kopf.PermanentError as err:
        fail(patch, body, "InvalidSpec", f"invalid spec: {err}")
    except (SpecError, ValueError, ArithmeticError, OverflowError) as err:  # e.g. a quantity builders cannot render
        fail(patch, body, "InvalidSpec", f"invalid spec: {err}")
    try:
        created = [o["metadata"]["name"] for o in objects if kube.create(o)]
    except kube.Foreign as err:
        fail(patch, body, "NameTaken", str(err))
    except kube.Terminating as err:  # gone in seconds: try again (kopf retries, what was created is kept)
        raise kopf.TemporaryError(str(err), delay=RETRY_S) from None
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    logger.info(f"{len(created)} created, {len(objects) - len(created)} already there: {', '.join(names)}")
    claims = [n for n in names if n.startswith("PersistentVolumeClaim/")]
    set_status(
        patch,
        body,
        status.get("phase") or "Pending",
        "ChildrenCreated",
        status.get("message") or "children created",
        children=names,
        progress=status.get("progress") or f"0/{_sources(exp)}",
        records=claims[0] if claims else "pod logs",
    )


def fail(patch: kopf.Patch, body: kopf.Body, reason: str, message: str):
    """End the Experiment: status Failed with a one-line message, and no retry (retrying cannot fix it)."""
    line = " ".join(str(message).split())[:1000]
    set_status(patch, body, "Failed", reason, line)
    raise kopf.PermanentError(line)


def _sources(exp: Experiment) -> int:
    return exp.spec.sources.replicas if exp.spec.uses_network else 0


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=INTERVAL,
    initial_delay=INTERVAL,
    when=lambda status, **_: (status or {}).get("phase") not in TERMINAL and bool((status or {}).get("children")),
)
def roll_up(body: kopf.Body, name: str, namespace: str, uid: str, status, patch: kopf.Patch, logger, **_) -> None:
    exp = experiment(body)
    pods, job = kube.children(namespace, name)
    new = rollup(pods, job, _sources(exp))
    reason = new.pop("reason")
    if any(status.get(k) != v for k, v in new.items()):
        if new["phase"] in TERMINAL and str(status.get("records", "")).startswith("PersistentVolumeClaim/"):
            _start_reader(exp, uid, namespace, logger)  # before the phase: a watcher of it finds the reader there
        phase, message = new.pop("phase"), new.pop("message")
        set_status(patch, body, phase, reason, message, **new)
        if phase != status.get("phase"):
            logger.info(f"{phase}: {message}")


def _start_reader(exp: Experiment, uid: str, namespace: str, logger) -> None:
    try:
        kube.create(records_reader(exp, uid, namespace, images()))
    except kube.Foreign as err:  # the record stays on the volume; the executor says it found no reader
        logger.warning(f"records reader not started: {err}")


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def spec_changed(logger, **_) -> None:
    """A run keeps the spec it started with (its record must say what was measured)."""
    logger.warning(
        "spec changed after the run was created: not applied; delete the Experiment and create it again "
        "to run the new spec (status.observedGeneration stays the generation that runs)"
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
def clean_up(name: str, namespace: str, logger, **_) -> None:
    logger.info(f"deleted {kube.delete_children(namespace, name)} children")
