import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAUSE_UNSPECIFIED: _ClassVar[Cause]
    CAUSE_VANISHING_GRADIENTS: _ClassVar[Cause]
    CAUSE_EXPLODING_GRADIENTS: _ClassVar[Cause]
    CAUSE_NON_FINITE: _ClassVar[Cause]
    CAUSE_UNNORMALIZED_INPUT: _ClassVar[Cause]
    CAUSE_LEARNING_RATE_TOO_HIGH: _ClassVar[Cause]
    CAUSE_LEARNING_RATE_TOO_LOW: _ClassVar[Cause]
    CAUSE_DEAD_RELU: _ClassVar[Cause]
    CAUSE_SATURATED_ACTIVATION: _ClassVar[Cause]
    CAUSE_LOSS_MISMATCH: _ClassVar[Cause]
    CAUSE_PREDICTION_COLLAPSE: _ClassVar[Cause]
    CAUSE_STALLED: _ClassVar[Cause]
    CAUSE_UNCHANGED_WEIGHTS: _ClassVar[Cause]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_HEALTHY: _ClassVar[Status]
    STATUS_WARNING: _ClassVar[Status]
    STATUS_CRITICAL: _ClassVar[Status]
CAUSE_UNSPECIFIED: Cause
CAUSE_VANISHING_GRADIENTS: Cause
CAUSE_EXPLODING_GRADIENTS: Cause
CAUSE_NON_FINITE: Cause
CAUSE_UNNORMALIZED_INPUT: Cause
CAUSE_LEARNING_RATE_TOO_HIGH: Cause
CAUSE_LEARNING_RATE_TOO_LOW: Cause
CAUSE_DEAD_RELU: Cause
CAUSE_SATURATED_ACTIVATION: Cause
CAUSE_LOSS_MISMATCH: Cause
CAUSE_PREDICTION_COLLAPSE: Cause
CAUSE_STALLED: Cause
CAUSE_UNCHANGED_WEIGHTS: Cause
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity
STATUS_UNSPECIFIED: Status
STATUS_HEALTHY: Status
STATUS_WARNING: Status
STATUS_CRITICAL: Status

class Finding(_message.Message):
    __slots__ = ("cause", "severity", "summary", "remedy", "layers", "evidence", "confidence", "explained_by", "trial")
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REMEDY_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_BY_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    cause: Cause
    severity: Severity
    summary: str
    remedy: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    evidence: _struct_pb2.Struct
    confidence: float
    explained_by: _containers.RepeatedScalarFieldContainer[Cause]
    trial: str
    def __init__(self, cause: _Optional[_Union[Cause, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., summary: _Optional[str] = ..., remedy: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., evidence: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., confidence: _Optional[float] = ..., explained_by: _Optional[_Iterable[_Union[Cause, str]]] = ..., trial: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("verdict_id", "run_id", "step", "create_time", "status", "primary_cause", "findings", "measurements", "checkpoint_sha256", "model_fingerprint", "phase_seconds", "training_metrics", "model_cache_hit", "probe_cached")
    class PhaseSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_CAUSE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PHASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    PROBE_CACHED_FIELD_NUMBER: _ClassVar[int]
    verdict_id: str
    run_id: str
    step: int
    create_time: _timestamp_pb2.Timestamp
    status: Status
    primary_cause: Cause
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    measurements: _struct_pb2.Struct
    checkpoint_sha256: str
    model_fingerprint: str
    phase_seconds: _containers.ScalarMap[str, float]
    training_metrics: TrainingMetrics
    model_cache_hit: bool
    probe_cached: bool
    def __init__(self, verdict_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[Status, str]] = ..., primary_cause: _Optional[_Union[Cause, str]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., measurements: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., checkpoint_sha256: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., phase_seconds: _Optional[_Mapping[str, float]] = ..., training_metrics: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., model_cache_hit: _Optional[bool] = ..., probe_cached: _Optional[bool] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("loss", "accuracy", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    loss: float
    accuracy: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...
