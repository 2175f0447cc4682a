"""The experiment and suite documents: one typed spec for the CLI, the executors and the CRD.

Field names are camelCase on the wire (YAML, Kubernetes) and snake_case in Python.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.alias_generators import to_camel

from . import registry

API_VERSION = "splitbench.dev/v1alpha1"
MODEL_NAMES = tuple(registry.MODELS)  # the registries are read once, when this module is imported
DATASET_NAMES = tuple(registry.DATASETS)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEM = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


# Caps that validate enforces (issue 14): a spec beyond them is a mistake or an attack on the host.
MAX_EPOCHS = 10_000
MAX_SAMPLES = 10_000_000
MAX_TIMEOUT_S = 86_400.0
MAX_CPU = 1024  # cores of one device
MAX_MEMORY = 1 << 44  # 16 TiB
MAX_SUITE_RUNS = 500  # experiments in one suite's matrix, unless --allow-large (SPLITBENCH_ALLOW_LARGE=1)
DATA_ROOTS_ENV = "SPLITBENCH_DATA_ROOTS"  # os.pathsep-separated folders dataset.root may be in


def data_roots() -> list[Path]:
    """Where dataset.root may point: the dataset cache, /data, /datasets, and $SPLITBENCH_DATA_ROOTS."""
    cache = os.environ.get("SPLITBENCH_CACHE") or str(Path.home() / ".cache" / "splitbench")
    extra = [d for d in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if d]
    return [Path(d).resolve() for d in (cache, "/data", "/datasets", *extra)]


class SpecError(ValueError):
    """A spec that cannot be used; str() is one line per problem."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelSpec(_Model):
    name: Literal[MODEL_NAMES]  # type: ignore[valid-type]
    num_classes: int = Field(10, ge=2, le=100000)


class PartitionSpec(_Model):
    kind: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration; small = skewed labels")


class DatasetSpec(_Model):
    name: Literal[DATASET_NAMES]  # type: ignore[valid-type]
    root: str | None = Field(None, description="where the files are; default depends on the dataset")
    download: bool = Field(False, description="let torchvision download when the files are missing")
    partition: PartitionSpec = PartitionSpec()
    samples_per_source: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="cap each source's partition")
    test_samples: int = Field(1000, ge=1, le=MAX_SAMPLES, description="held-out samples used for accuracy")
    image_size: int | None = Field(None, ge=8, le=512, description="synthetic only: side in pixels")
    channels: int | None = Field(None, ge=1, le=4, description="synthetic only")

    @field_validator("root")
    @classmethod
    def _root_allowed(cls, v: str | None) -> str | None:
        if v is None:
            return v
        r = Path(v).expanduser().resolve()
        roots = data_roots()
        if not any(r.is_relative_to(d) for d in roots):
            raise ValueError(
                f"{v[:200]!r} is outside the allowed data roots ({', '.join(map(str, roots))}); "
                f"add one with {DATA_ROOTS_ENV}"
            )
        return v


def _profile_field(kind: str, description: str) -> Any:
    """A profile name: the CRD and the JSON schema list the registry's names (read when the
    schema is generated); validation checks them (read when a spec is validated)."""

    def extra(schema: dict[str, Any]) -> None:
        names = registry.profile_names(kind)
        if names:
            schema["enum"] = names

    return Field(None, description=description, json_schema_extra=extra)


def _known_profile(kind: str, name: str | None) -> str | None:
    names = registry.profile_names(kind)
    if name is not None and names and name not in names:
        raise ValueError(f"unknown profile {name[:64]!r}; known: {', '.join(names)}")
    return name


class _ParadigmBase(_Model):
    """A paradigm's fields besides `name`; the variant with its name is made from the registry
    (registry.PARADIGMS) below."""


class FullOffloadParadigm(_ParadigmBase):
    input_encoding: Literal["uint8", "float32"] = Field(
        "uint8", description="how raw inputs travel: uint8 pixels or normalized float32 tensors"
    )
    cache_inputs: bool = Field(
        False,
        description="the server keeps each sample after its first upload; later epochs send only "
        "4-byte sample ids (false: inputs are sent again every epoch, as a stream)",
    )
    delivery: Literal["acknowledged", "stream"] = Field(
        "acknowledged",
        description="acknowledged: the source waits for the server's reply after every batch; "
        "stream: it sends and goes on, as early exit does (the hierarchical-training "
        "paper's full-cloud baseline)",
    )


class SplitParadigm(_ParadigmBase):
    split_after: int = Field(ge=1, description="number of model blocks kept on the source")


class CompressionSpec(_Model):
    """Compression-aware split learning (Mudvari et al.). The paper gives no values for
    delta, lambda, epsilon, gamma or l_k; these defaults are ours."""

    schedule: Literal["fixed", "deprune", "prune"] = Field(
        "fixed",
        description="fixed: one budget; deprune: budgets ascending (alg. 1-2); prune: descending from "
        "the full budget, filter reset between budgets (alg. 3)",
    )
    budgets: list[int] = Field(min_length=1, description="channels that may cross the wire, one stage each")
    epochs: list[int] = Field(min_length=1, description="epochs per budget stage")
    module: Literal["encoder_decoder", "bare_mask"] = Field(
        "bare_mask",
        description="encoder_decoder: the paper's module (sec. 3.1; VCCprune's encodingUnit/"
        "decodingUnit): conv(2+r, stride r, pad r)+BN+sigmoid, the filter, and on the server "
        "a transposed conv+BN+ReLU; bare_mask: the filter alone [ours, an ablation]",
    )
    resolution: int | None = Field(
        None,
        ge=1,
        le=8,
        description="resolution compression factor r of the encoder_decoder module (VCCprune's default: 1)",
    )
    regularizer: Literal["sum", "sum_of_squares"] = Field(
        "sum", description="pruneLoss over sum f (the paper's eq. 1) or sum f^2 (VCCprune's deprune.py)"
    )
    delta: float = Field(0.1, gt=0, description="eq. 1: how hard the budget's soft constraint bites [ours]")
    lam: float = Field(1.0, ge=0, le=1, alias="lambda", description="eq. 1: weight of the lower barrier [ours]")
    epsilon: float = Field(1.0, gt=0, description="eq. 2: weight of pruneLoss against the task loss [ours]")
    gamma: float = Field(2.0, ge=1, description="selectLr: lr factor after a budget change [ours]")
    lk: int = Field(1, ge=0, description="selectLr: epochs the raised lr lasts after a budget change [ours]")
    bn_recalibration_batches: int = Field(
        0,
        ge=0,
        le=64,
        description="before each evaluation, recompute every batch norm's running statistics on "
        "the source's last N training batches, across the cut (torch.optim.swa_utils."
        "update_bn's procedure); 0: off, as VCCprune, whose thousands of steps per "
        "epoch let the momentum-0.03 statistics settle",
    )

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("every budget must be at least 1 channel")
        return v

    @model_validator(mode="after")
    def _stages(self) -> "CompressionSpec":
        if len(self.epochs) != len(self.budgets):
            raise ValueError(f"{len(self.budgets)} budgets but {len(self.epochs)} epoch counts: give one per budget")
        if any(e < 1 for e in self.epochs):
            raise ValueError("every stage needs at least 1 epoch")
        if self.resolution and self.module != "encoder_decoder":
            raise ValueError("resolution needs module: encoder_decoder (the bare mask has no convolutions)")
        if self.schedule == "fixed" and len(self.budgets) != 1:
            raise ValueError("schedule 'fixed' takes exactly one budget; use deprune or prune for several")
        if self.schedule == "deprune" and self.budgets != sorted(self.budgets):
            raise ValueError("deprune trains small budgets first: budgets must be ascending")
        if self.schedule == "prune" and self.budgets != sorted(self.budgets, reverse=True):
            raise ValueError("prune starts from the full budget: budgets must be descending")
        return self


class CompressedSplitParadigm(_ParadigmBase):
    split_after: int = Field(ge=1, description="number of model blocks kept on the source")
    compression: CompressionSpec


class EarlyExitParadigm(_ParadigmBase):
    """Hierarchical training with an early exit (Sepehri et al.): the edge trains its blocks on
    an early-exit loss, sends features and labels, and never waits for the cloud."""

    split_after: int = Field(ge=1, description="the separation point: blocks kept on the edge")


class FedAvgParadigm(_ParadigmBase):
    """Federated averaging (McMahan et al.): each source trains the whole model for
    localEpochs, then the aggregator averages the weights by sample count and sends them back."""

    local_epochs: int = Field(1, ge=1, description="E: epochs each source trains between aggregations")


class HfslParadigm(_ParadigmBase):
    """Hierarchical federated split learning (the HFSL paper, sec. 3.3): K low devices (the
    sources) hold W_l, K medium devices (the servers, one per source) hold W_m, one high
    device (the aggregator) averages each partition after every round."""

    split_after: int = Field(ge=1, description="blocks in W_l (choose it with splitbench plan --paradigm hfsl)")
    local_epochs: int = Field(1, ge=1, description="E: epochs of split training between aggregations")
    candidates: list[int] = Field(
        default_factory=list,
        description=(
            "cuts the split may move between during the run (splitbench plan's candidates): after every round "
            "the aggregator's Q-learning agent re-chooses from the devices' remaining power; empty: fixed split"
        ),
    )

    @model_validator(mode="after")
    def _start_among_candidates(self) -> "HfslParadigm":
        if self.candidates and self.split_after not in self.candidates:
            raise ValueError(f"splitAfter {self.split_after} must be one of the candidates {self.candidates}")
        return self


def _variant(name: str, info: registry.ParadigmInfo) -> type[BaseModel]:
    base: Any = globals()[info.params] if info.params else _ParadigmBase
    title = info.params or "".join(w.title() for w in name.split("_")) + "Paradigm"
    field: Any = (Literal[name], Field(description=info.summary))  # the literal is known only at run time
    return create_model(title, __base__=base, __module__=__name__, name=field)


PARADIGM_MODELS: dict[str, type[BaseModel]] = {n: _variant(n, i) for n, i in registry.PARADIGMS.items()}
if TYPE_CHECKING:  # built from the registry at import time, so a checker sees only "one of the variants"
    ParadigmSpec = Any
else:
    ParadigmSpec = Annotated[Union[tuple(PARADIGM_MODELS.values())], Field(discriminator="name")]


class TrainingSpec(_Model):
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["none", "cosine"] = Field(
        "none",
        description="the lr over epochs: none keeps lr; cosine anneals it to 0 over the run's epochs "
        "(torch's CosineAnnealingLR, one step per epoch; every role that trains follows it)",
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cut epochs short (quick runs)")
    reply_timeout_s: float = Field(
        120.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="a peer silent this long is dead"
    )
    evaluate: Literal["every_epoch", "end"] = Field(
        "every_epoch",
        description="held-out evaluation after every epoch, or only after the last one (its "
        "traffic then cannot slow training down; train_time_s is training alone)",
    )


class DirectionSpec(_Model):
    rate_mbit: float | None = Field(None, gt=0, description="goodput in Mbit/s; null = unlimited")
    delay_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    loss: float = Field(0.0, ge=0, lt=1, description="packet loss probability")


class OutageSpec(_Model):
    at_s: float = Field(ge=0, description="seconds after training begins (the first training message)")
    for_s: float = Field(gt=0, description="how long the link carries nothing, both directions")


class NetworkSpec(_Model):
    """A named profile from benchmarks/networks.yaml, or an explicit link; explicit fields
    override the profile's."""

    profile: str | None = _profile_field("network", "a name in benchmarks/networks.yaml (registry.network_profiles)")
    medium: Literal["dedicated", "shared", "none"] | None = None
    uplink: DirectionSpec | None = None
    downlink: DirectionSpec | None = None
    trace: str | None = Field(None, description="file of '[time_s, Mbit/s]' lines replayed as the rate")
    outages: list[OutageSpec] = Field(default_factory=list, description="windows when the link is down")

    @field_validator("profile")
    @classmethod
    def _profile_known(cls, v: str | None) -> str | None:
        return _known_profile("network", v)

    @model_validator(mode="after")
    def _profile_or_link(self) -> "NetworkSpec":
        if self.profile is None and self.medium is None:
            raise ValueError("give a profile name or a medium with uplink/downlink")
        for a, b in zip(self.outages, self.outages[1:]):
            if b.at_s < a.at_s + a.for_s:
                raise ValueError(f"outages must be in time order and not overlap ({a.at_s}+{a.for_s} s > {b.at_s} s)")
        if self.outages and self.medium == "none":
            raise ValueError("outages need an emulated link (medium is none)")
        return self


class LoadStep(_Model):
    from_round: int = Field(ge=0, description="federated round from which it holds")
    busy: float = Field(
        ge=0,
        lt=1,
        description="share of the device taken by other work (its quota shrinks "
        "by it; hfsl reports 1 - busy as the device's free share)",
    )


class DeviceSpec(_Model):
    profile: str | None = _profile_field("device", "a name in benchmarks/devices.yaml (registry.device_profiles)")
    cpu: str | float | None = Field(None, description="CPU quota in cores or millicores ('400m')")
    memory: str | None = None
    load: list[LoadStep] = Field(default_factory=list, description="other work on the device, per round")

    @field_validator("profile")
    @classmethod
    def _profile_known(cls, v: str | None) -> str | None:
        return _known_profile("device", v)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, str) and not _CPU.match(v):
            raise ValueError("expected cores (0.4) or millicores ('400m')")
        # at least one millicore (Kubernetes' resolution: 0.0001 would become 0m), at most MAX_CPU cores
        quantity(v, "cpu", 0.001, MAX_CPU)
        return v

    @field_validator("memory")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _MEM.match(v):
            raise ValueError("expected a Kubernetes quantity such as '1Gi' or '512Mi'")
        if v is not None:
            quantity(v, "memory", 1 << 20, MAX_MEMORY)
        return v


MAX_SOURCES = 4096  # sources of one experiment (in groups: one process per source stops at MAX_PROCESSES)
MAX_PROCESSES = 256  # source processes of one experiment


class SourcesSpec(_Model):
    replicas: int = Field(
        1,
        ge=1,
        le=MAX_SOURCES,
        description=f"at most {MAX_PROCESSES} with one process per source; more in groups (groupSize)",
    )
    group_size: int = Field(
        1,
        ge=1,
        le=MAX_SOURCES,
        description=(
            "sources hosted in one process (a source group, local executor only): each keeps its own socket, "
            "identity, key, partition and record, and the group shares one CPU quota of groupSize times "
            "device.cpu; 1: one process per source"
        ),
    )
    device: DeviceSpec = DeviceSpec()
    deadline: float = Field(
        30.0,
        gt=0,
        le=MAX_TIMEOUT_S,
        allow_inf_nan=False,
        description=(
            "seconds a source may be late before the run goes on without it. split, compressed_split, early_exit, "
            "full_offload: per step (a source silent this long while the others have finished is gone); fedavg, "
            "hfsl: per round (a round closes this long after its first update arrived, averaging the updates that "
            "came, weighted by their sample counts, and a device that missed it is not waited for again). A run "
            "that lost a source ends degraded, not failed; devices that wait on the aggregator allow it this much "
            "beyond training.replyTimeoutS"
        ),
    )

    @model_validator(mode="after")
    def _groups(self) -> "SourcesSpec":
        if self.group_size > self.replicas:
            raise ValueError(f"sources.groupSize {self.group_size} exceeds sources.replicas {self.replicas}")
        if -(-self.replicas // self.group_size) > MAX_PROCESSES:
            raise ValueError(
                f"sources.replicas {self.replicas} in groups of {self.group_size} is "
                f"{-(-self.replicas // self.group_size)} source processes, more than {MAX_PROCESSES}; "
                f"raise sources.groupSize to at least {-(-self.replicas // MAX_PROCESSES)}"
            )
        if self.group_size > 1 and self.device.load:
            raise ValueError("sources.device.load needs one process per source (groupSize 1): a group shares one quota")
        return self


class ServerSpec(_Model):
    replicas: int | None = Field(None, ge=1, le=256, description="default: 1; hfsl: one medium device per source")
    gpu: int = Field(0, ge=0, le=8)
    device: DeviceSpec = DeviceSpec()


class AggregatorSpec(_Model):
    """The device that averages weights (fedavg, hfsl: the paper's high-computational device)."""

    device: DeviceSpec = DeviceSpec()


class TransportSpec(_Model):
    auth: Literal["curve", "none"] = Field(
        "curve",
        description="curve: every socket is CurveZMQ with one keypair per role, and each listener "
        "accepts only this experiment's keys; none: plain TCP (anyone who reaches a port "
        "can speak)",
    )


FAULT_ROLE = re.compile(r"^(source|server|aggregator)-(\d+)$")


class FaultSpec(_Model):
    """A fault injected on purpose, to measure how a paradigm tolerates churn. Times count from
    the start of training (the first step), as network.outages do."""

    kind: Literal["kill", "cut", "slow"] = Field(
        description=(
            "kill: the executor kills the role (SIGKILL) at atStep or atS; cut: the emulated link carries nothing "
            "from atS for forS (added to network.outages); slow: the source's CPU quota is cpu from atS for forS"
        )
    )
    role: str | None = Field(None, description="kill, slow: the role instance, e.g. source-1, server-0, aggregator-0")
    at_step: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="kill a source once it has recorded this many training steps"
    )
    at_s: float | None = Field(
        None, ge=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="seconds after training begins"
    )
    for_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="cut, slow: how long the fault lasts"
    )
    cpu: str | float | None = Field(None, description="slow: the CPU quota meanwhile, in cores or millicores")

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: Any) -> Any:
        return DeviceSpec._cpu(v)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "FaultSpec":
        given = {f for f in ("role", "at_step", "at_s", "for_s", "cpu") if getattr(self, f) is not None}
        need = {"kill": {"role"}, "cut": {"at_s", "for_s"}, "slow": {"role", "at_s", "for_s", "cpu"}}[self.kind]
        allowed = need | ({"at_step", "at_s"} if self.kind == "kill" else set())
        if need - given:
            raise ValueError(f"a {self.kind} fault needs {', '.join(sorted(to_camel(f) for f in need - given))}")
        if given - allowed:
            raise ValueError(f"a {self.kind} fault takes no {', '.join(sorted(to_camel(f) for f in given - allowed))}")
        if self.kind == "kill" and (self.at_step is None) == (self.at_s is None):
            raise ValueError("a kill fault needs exactly one of atStep and atS")
        if self.role is not None and not FAULT_ROLE.match(self.role):
            raise ValueError(f"role {self.role[:64]!r}: expected source-<i>, server-<j> or aggregator-0")
        if self.at_step is not None and not (self.role or "").startswith("source-"):
            raise ValueError("atStep counts a source's steps: use atS for a server or the aggregator")
        if self.kind == "slow" and not (self.role or "").startswith("source-"):
            raise ValueError("a slow fault slows a source")
        return self


class CheckpointSpec(_Model):
    """Checkpoints and restarts (roles/recovery.py): what a killed role resumes from."""

    every: int | Literal["epoch", "none"] = Field(
        "epoch",
        description="a source saves every N steps, the server every N steps served, the aggregator "
        "every N rounds; epoch: once an epoch (a round); none: never",
    )
    restarts: int = Field(
        3, ge=0, le=100, description="times a dead server or aggregator is restarted before the run fails"
    )
    backoff_s: float = Field(
        10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="delay before the first restart, doubling after each (at most 300 s), "
        "as a kubelet backs off a crashing container",
    )

    @field_validator("every")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be a positive number of steps or rounds, 'epoch' or 'none'")
        return v


class ExperimentSpec(_Model):
    model: ModelSpec
    dataset: DatasetSpec
    paradigm: ParadigmSpec
    training: TrainingSpec = TrainingSpec()
    network: NetworkSpec = NetworkSpec.model_construct(profile="ethernet-1g")  # checked where it is used
    sources: SourcesSpec = SourcesSpec()
    server: ServerSpec = ServerSpec()
    aggregator: AggregatorSpec = AggregatorSpec()
    transport: TransportSpec = TransportSpec()
    faults: list[FaultSpec] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "faults injected on purpose (kill a role, cut the link, slow a source); each is recorded as a fault "
            "event with its start and end"
        ),
    )
    checkpoint: CheckpointSpec = CheckpointSpec()
    seed: int = Field(0, ge=0)

    @property
    def uses_network(self) -> bool:
        return self.paradigm.name != "centralized"

    @property
    def server_count(self) -> int:
        """Server processes: one, or for hfsl one medium device per source."""
        return self.sources.replicas if self.paradigm.name == "hfsl" else 1

    def network_with_faults(self) -> NetworkSpec:
        """The network with the cut faults as outages (the link emulator's one mechanism for them)."""
        cuts = [OutageSpec(at_s=f.at_s, for_s=f.for_s) for f in self.faults if f.kind == "cut"]
        if not cuts:
            return self.network
        outages = sorted([*self.network.outages, *cuts], key=lambda o: o.at_s)
        return NetworkSpec.model_validate({**self.network.model_dump(), "outages": [o.model_dump() for o in outages]})

    @model_validator(mode="after")
    def _faults_name_roles(self) -> "ExperimentSpec":
        for f in self.faults:
            if f.role is None:
                if not self.uses_network or self.network.medium == "none":
                    raise ValueError("a cut fault needs an emulated link to cut")
                continue
            match = FAULT_ROLE.match(f.role)
            assert match is not None  # FaultSpec checked it
            kind, index = match.groups()
            if kind == "source" and self.sources.group_size > 1:
                raise ValueError(
                    f"fault role {f.role}: {f.kind} faults act on a source's own process; use sources.groupSize 1"
                )
            count = {
                "source": self.sources.replicas if self.uses_network else 0,
                "server": self.server_count if self.paradigm.name not in ("centralized", "fedavg") else 0,
                "aggregator": 1 if self.paradigm.name in ("fedavg", "hfsl") else 0,
            }[kind]
            if int(index) >= count:
                raise ValueError(
                    f"fault role {f.role}: {self.paradigm.name} with {self.sources.replicas} sources "
                    f"has {count} {kind} role(s)"
                )
        self.network_with_faults()  # cuts must not overlap the network's outages
        return self

    @model_validator(mode="after")
    def _groups_share_a_hop(self) -> "ExperimentSpec":
        if self.sources.group_size > 1 and self.paradigm.name == "hfsl":
            raise ValueError("sources.groupSize: hfsl gives each source its own server; use groupSize 1")
        return self

    @model_validator(mode="after")
    def _epochs_match_schedule(self) -> "ExperimentSpec":
        comp = getattr(self.paradigm, "compression", None)
        if comp is not None and sum(comp.epochs) != self.training.epochs:
            raise ValueError(
                f"training.epochs is {self.training.epochs} but the compression schedule's stages "
                f"add up to {sum(comp.epochs)} epochs; make them equal"
            )
        local = getattr(self.paradigm, "local_epochs", None)
        if local is not None and self.training.epochs % local:
            raise ValueError(
                f"training.epochs ({self.training.epochs}) must be a whole number of rounds of "
                f"paradigm.localEpochs ({local})"
            )
        wanted = self.server_count
        if self.server.replicas not in (None, wanted):
            raise ValueError(
                f"server.replicas is {self.server.replicas}; {self.paradigm.name} needs {wanted}"
                + (" (one medium device per source)" if self.paradigm.name == "hfsl" else "")
            )
        return self


class Metadata(_Model):
    name: str = Field(max_length=63)
    labels: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError("must be lowercase letters, digits and '-' (a DNS label)")
        return v


class Experiment(_Model):
    api_version: Literal[API_VERSION] = Field(API_VERSION, alias="apiVersion")  # type: ignore[valid-type]
    kind: Literal["Experiment"] = "Experiment"
    metadata: Metadata
    spec: ExperimentSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(by_alias=True, mode="json", exclude_none=True), sort_keys=False)


class PaperClaim(_Model):
    """A paper's headline figure as a ratio of one summary metric between two runs of the
    suite; the report puts our measurement beside it, and never tunes toward it."""

    claim: str
    source: str = Field(description="where the paper says it (section, figure)")
    paper: float = Field(gt=0, description="the paper's ratio")
    metric: Literal[
        "bytes_per_sample",
        "bytes_per_sample_up",
        "onair_bytes_per_sample",
        "final_accuracy",
        "time_to_target_s",
        "step_time_s",
        "train_wall_s",
        "train_time_s",
        "epoch_time_s",
        "samples_per_s_per_source",
        "speedup_vs_scratch",
        "model_params",
        "model_mult_adds",
        "model_ops_with_elementwise",
    ]
    tolerance: float = Field(
        gt=0, lt=10, description="relative band around the paper's figure within which ours agrees (0.2 = +-20%)"
    )
    tolerance_source: str = Field(
        min_length=3, description="where the band comes from: the paper's own spread, or a stated reason"
    )
    if_differs: str = Field(
        "", description="one line: the known reason ours may differ (setting, scale), shown beside a 'differs' verdict"
    )
    numerator: str = Field("", description="experiment name, or the end of one (suite prefix optional)")
    denominator: str = ""
    model: str | None = Field(
        None,
        description="model_* metrics: the model whose definition is counted "
        "(1000 classes), instead of a ratio of two runs",
    )
    input_size: int | None = Field(None, ge=8, description="model_* metrics: the square input resolution")
    budget: int | None = Field(
        None,
        ge=1,
        description="speedup_vs_scratch only: the budget stage of the "
        "numerator compared with the denominator's fixed run",
    )

    @model_validator(mode="after")
    def _budget_with_speedup(self) -> "PaperClaim":
        if (self.metric == "speedup_vs_scratch") != (self.budget is not None):
            raise ValueError("metric speedup_vs_scratch needs a budget, and a budget needs that metric")
        if self.metric.startswith("model_"):
            if not self.model or (self.metric != "model_params" and not self.input_size):
                raise ValueError(f"metric {self.metric} needs a model (and an inputSize for operation counts)")
        elif not (self.numerator and self.denominator):
            raise ValueError(f"metric {self.metric} is a ratio of two runs: give numerator and denominator")
        return self


class SuiteReport(_Model):
    target_accuracy: float = Field(0.7, gt=0, le=1)
    paper_claims: list[PaperClaim] = []


class SuiteSpec(_Model):
    base: dict[str, Any] = Field(description="experiment spec fields shared by every run")
    matrix: dict[str, list[Any]] = Field(
        default_factory=dict, description="spec field -> values; the runs are their product"
    )
    cases: list[dict[str, Any]] = Field(
        default_factory=list,
        description="runs that set several fields together (a model and the cut "
        "that suits it), named after them or by 'label'; crossed with "
        "the matrix",
    )
    report: SuiteReport = SuiteReport()
    repeats: int = Field(
        1,
        ge=1,
        le=100,
        description=(
            "runs of every setting, each with its own seed (seed, seed+1, ...); the report gives mean, spread and a "
            "95% confidence interval over them and ranks only what a test can tell apart"
        ),
    )


SETTING_LABEL = "splitbench.dev/setting"
REPEAT_LABEL = "splitbench.dev/repeat"


class Suite(_Model):
    api_version: Literal[API_VERSION] = Field(API_VERSION, alias="apiVersion")  # type: ignore[valid-type]
    kind: Literal["Suite"] = "Suite"
    metadata: Metadata
    spec: SuiteSpec

    @model_validator(mode="after")
    def _claims_name_runs(self) -> "Suite":
        """A paper claim must point at runs of this suite, or its row would silently read
        'not measured'."""
        claims = self.spec.report.paper_claims
        if not claims:
            return self
        names = [e.name for e in self.experiments()]
        for c in claims:
            if c.metric.startswith("model_"):
                continue  # counted from the model's definition, not from runs
            for end in (c.numerator, c.denominator):
                hits = [n for n in names if n == end or n.endswith("-" + end)]
                if len(hits) != 1:
                    raise ValueError(
                        f"paper claim {c.claim!r}: {end!r} matches {len(hits)} runs of the suite, not exactly one"
                    )
        return self

    def runs(self, repeats: int | None = None) -> list[Experiment]:
        """Every setting (experiments()) repeated, all settings once per round of repeats: repeat k
        (1-based) has seed + k - 1, and with
        more than one repeat the name <setting>-r<k>; labels name the setting and the repeat,
        so the report groups repeats without parsing names."""
        n = repeats or self.spec.repeats
        if n < 1:
            raise SpecError(f"suite {self.metadata.name}: repeats must be at least 1, got {n}")
        out = []
        settings = self.experiments()
        for k in range(1, n + 1):  # repeat-major: a slow drift of the machine spreads over every setting
            for exp in settings:
                name = _dns_name(exp.name, 63 - len(f"-r{k}")) + f"-r{k}" if n > 1 else exp.name
                spec = exp.spec.model_copy(update={"seed": exp.spec.seed + k - 1})
                labels = {**exp.metadata.labels, SETTING_LABEL: exp.name, REPEAT_LABEL: str(k)}
                out.append(Experiment(metadata=Metadata(name=name, labels=labels), spec=spec))
        return out

    def experiments(self) -> list[Experiment]:
        """The product of the matrix over the base; paradigms that use no network run once."""
        axes = list(self.spec.matrix.items())
        if self.spec.cases:
            axes.insert(0, (_CASE, self.spec.cases))
        size = math.prod(len(values) for _, values in axes)
        if size > MAX_SUITE_RUNS and os.environ.get("SPLITBENCH_ALLOW_LARGE") != "1":
            raise SpecError(
                f"suite {self.metadata.name}: its matrix makes {size} runs, more than {MAX_SUITE_RUNS}; "
                "pass --allow-large if you mean it"
            )
        seen: dict[str, ExperimentSpec] = {}
        out: list[Experiment] = []
        for combo in itertools.product(*[values for _, values in axes]):
            doc = copy.deepcopy(self.spec.base)
            parts = []
            for (field, _), value in zip(axes, combo):
                fields = {k: v for k, v in value.items() if k != "label"} if field == _CASE else {field: value}
                for f, v in fields.items():
                    doc[f] = _merge(doc.get(f), v)
                if field != _CASE:
                    parts.append(_label(field, value))
                else:
                    parts.append(
                        _label("label", value["label"])
                        if "label" in value
                        else "-".join(_label(f, v) for f, v in fields.items())
                    )
            spec = _validate(ExperimentSpec, doc, f"suite {self.metadata.name} run {'/'.join(parts)}")
            if not spec.uses_network:
                spec = spec.model_copy(update={"network": NetworkSpec(medium="none")})
                parts = [p for (f, _), p in zip(axes, parts) if f != "network"]
            name = _dns_name("-".join([self.metadata.name, *parts]))
            if name in seen:
                if seen[name] != spec:
                    raise SpecError(f"suite {self.metadata.name}: two different runs are both named {name}")
                continue  # the same run twice (centralized over several networks)
            seen[name] = spec
            out.append(Experiment(metadata=Metadata(name=name), spec=spec))
        return out


_CASE = "<case>"


def _dns_name(name: str, room: int = 63) -> str:
    """At most room characters (63: a DNS label); distinct long names stay distinct."""
    if len(name) <= room:
        return name
    return name[: room - 9].rstrip("-") + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _merge(base: Any, value: Any) -> Any:
    if isinstance(base, dict) and isinstance(value, dict):
        merged = dict(base)
        for k, v in value.items():
            merged[k] = _merge(base.get(k), v)
        return merged
    return copy.deepcopy(value)


def _label(field: str, value: Any) -> str:
    """A short name for one matrix value, for experiment names."""
    if field == "faults" and isinstance(value, list):  # a list of faults: what each does to whom
        return (
            "-".join(_label("", f"{f.get('kind')}-{f.get('role') or 'link'}") for f in value if isinstance(f, dict))
            or "no-faults"
        )
    if isinstance(value, dict):
        if field == "paradigm":
            info = registry.PARADIGMS.get(str(value.get("name")))
            bits = [info.label if info and info.label else str(value.get("name", "p"))]
            if "splitAfter" in value:
                bits.append(f"s{value['splitAfter']}")
            if "inputEncoding" in value:
                bits.append(str(value["inputEncoding"]))
            if value.get("cacheInputs"):
                bits.append("cached")
            if "delivery" in value:  # named only when a suite sets it
                bits.append({"stream": "stream", "acknowledged": "ack"}[value["delivery"]])
            if value.get("localEpochs", 1) != 1:
                bits.append(f"e{value['localEpochs']}")
            comp = value.get("compression")
            if isinstance(comp, dict):
                if comp.get("module") == "bare_mask":  # named only when a suite asks for it (the ablation)
                    bits.append("bare")
                bits.append(str(comp.get("schedule", "fixed")))
                bits.append("b" + "-".join(str(b) for b in comp.get("budgets", [])))
            text = "-".join(bits)
        else:
            text = str(value.get("profile") or value.get("name") or "-".join(f"{v}" for v in value.values()))
            text = {"resnet18_imagenet_stem": "resnet18-inet"}.get(text, text)  # names stay under 63 chars
    else:
        text = str(value)
    return re.sub(r"[^a-z0-9-]+", "-", text.lower().replace("_", "-")).strip("-")


def cpu_cores(value: str | float | None) -> float | None:
    """'400m' -> 0.4, '2' -> 2.0, 0.5 -> 0.5 (Kubernetes quantity rules: kubernetes.utils.parse_quantity)."""
    if value is None:
        return None
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(value))


def memory_bytes(value: str | None) -> int | None:
    """'1Gi' -> 1073741824, '512M' -> 512000000; None stays None (kubernetes.utils.parse_quantity,
    imported when called: roles stay free of the Kubernetes client until they need it)."""
    if not value:
        return None
    from kubernetes.utils import parse_quantity

    try:
        return int(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        raise SpecError(f"memory: {str(value)[:40]!r} is not a Kubernetes quantity (e.g. 512Mi, 1Gi)") from None


def quantity(value: str | float, what: str, lo: float, hi: float) -> float:
    """A Kubernetes quantity within [lo, hi], or ValueError in one line naming `what`."""
    from kubernetes.utils import parse_quantity

    try:
        q = parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        raise ValueError(f"{what}: {str(value)[:40]!r} is not a Kubernetes quantity") from None
    if not lo <= q <= hi:
        raise ValueError(f"{what}: {str(value)[:40]!r} is outside {lo:g}..{hi:g}")
    return float(q)


def format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        lines.append(f"{where}: {loc or '(document)'}: {e['msg']}")
    return "\n".join(lines)


_UNION_TAGS = set(registry.PARADIGMS)


def _validate(model: type[BaseModel], doc: Any, where: str) -> Any:
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise SpecError(format_errors(err, where)) from None


def load_document(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment | Suite:
    """Read an Experiment or Suite YAML file; raise SpecError with one line per problem.
    overrides: `path.to.field=value` items set in the document before it is validated (overrides.py)."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(f"{p}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{p}: expected a mapping with apiVersion, kind, metadata and spec")
    if overrides:
        from .overrides import apply

        doc = apply(doc, overrides)
    kind = doc.get("kind")
    if kind == "Experiment":
        return _validate(Experiment, doc, str(p))
    if kind == "Suite":
        suite = _validate(Suite, doc, str(p))
        suite.experiments()  # every run of the matrix must be valid too
        return suite
    raise SpecError(f"{p}: kind: expected 'Experiment' or 'Suite', got {kind!r}")


def load_experiment(path: str | Path) -> Experiment:
    doc = load_document(path)
    if not isinstance(doc, Experiment):
        raise SpecError(f"{path}: expected kind Experiment, got {doc.kind}")
    return doc


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    doc = load_document(path, overrides)
    if isinstance(doc, Experiment):  # a single experiment is a suite of one
        return Suite(
            metadata=doc.metadata,
            spec=SuiteSpec(base=doc.spec.model_dump(by_alias=True, mode="json", exclude_none=True)),
        )
    return doc


def json_schema(kind: str = "Experiment") -> dict[str, Any]:
    model = {"Experiment": Experiment, "Suite": Suite}[kind]
    return model.model_json_schema(by_alias=True)
