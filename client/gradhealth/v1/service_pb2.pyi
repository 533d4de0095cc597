import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gradhealth.v1 import verdict_pb2 as _verdict_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBE_MODE_UNSPECIFIED: _ClassVar[ProbeMode]
    PROBE_MODE_FULL: _ClassVar[ProbeMode]
    PROBE_MODE_NORMS: _ClassVar[ProbeMode]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_ACTIVE: _ClassVar[RunState]
    RUN_STATE_FINISHED: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
PROBE_MODE_UNSPECIFIED: ProbeMode
PROBE_MODE_FULL: ProbeMode
PROBE_MODE_NORMS: ProbeMode
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_ACTIVE: RunState
RUN_STATE_FINISHED: RunState
RUN_STATE_STOPPED: RunState

class ProbeOptions(_message.Message):
    __slots__ = ("mode", "disable_xla")
    MODE_FIELD_NUMBER: _ClassVar[int]
    DISABLE_XLA_FIELD_NUMBER: _ClassVar[int]
    mode: ProbeMode
    disable_xla: bool
    def __init__(self, mode: _Optional[_Union[ProbeMode, str]] = ..., disable_xla: _Optional[bool] = ...) -> None: ...

class UploadInfo(_message.Message):
    __slots__ = ("size_bytes", "sha256")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    sha256: str
    def __init__(self, size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DiagnoseHeader(_message.Message):
    __slots__ = ("run_id", "step", "wall_time", "training_metrics", "options", "checkpoint", "batch", "request_id", "ad_hoc")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    TRAINING_METRICS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AD_HOC_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    wall_time: _timestamp_pb2.Timestamp
    training_metrics: _verdict_pb2.TrainingMetrics
    options: ProbeOptions
    checkpoint: UploadInfo
    batch: UploadInfo
    request_id: str
    ad_hoc: bool
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., wall_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., training_metrics: _Optional[_Union[_verdict_pb2.TrainingMetrics, _Mapping]] = ..., options: _Optional[_Union[ProbeOptions, _Mapping]] = ..., checkpoint: _Optional[_Union[UploadInfo, _Mapping]] = ..., batch: _Optional[_Union[UploadInfo, _Mapping]] = ..., request_id: _Optional[str] = ..., ad_hoc: _Optional[bool] = ...) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ("header", "checkpoint_chunk", "batch_chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    BATCH_CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DiagnoseHeader
    checkpoint_chunk: bytes
    batch_chunk: bytes
    def __init__(self, header: _Optional[_Union[DiagnoseHeader, _Mapping]] = ..., checkpoint_chunk: _Optional[bytes] = ..., batch_chunk: _Optional[bytes] = ...) -> None: ...

class DiagnoseResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: _verdict_pb2.Verdict
    def __init__(self, verdict: _Optional[_Union[_verdict_pb2.Verdict, _Mapping]] = ...) -> None: ...

class GetVerdictRequest(_message.Message):
    __slots__ = ("verdict_id",)
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    verdict_id: str
    def __init__(self, verdict_id: _Optional[str] = ...) -> None: ...

class GetVerdictResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: _verdict_pb2.Verdict
    def __init__(self, verdict: _Optional[_Union[_verdict_pb2.Verdict, _Mapping]] = ...) -> None: ...

class ListVerdictsRequest(_message.Message):
    __slots__ = ("run_id", "page_size", "page_token", "status", "cause", "start_time", "end_time")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    page_size: int
    page_token: str
    status: _verdict_pb2.Status
    cause: _verdict_pb2.Cause
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_verdict_pb2.Status, str]] = ..., cause: _Optional[_Union[_verdict_pb2.Cause, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListVerdictsResponse(_message.Message):
    __slots__ = ("verdicts", "next_page_token")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[_verdict_pb2.Verdict]
    next_page_token: str
    def __init__(self, verdicts: _Optional[_Iterable[_Union[_verdict_pb2.Verdict, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "latest_status", "latest_primary_cause", "latest_step", "last_diagnosis_time", "verdict_count", "stalled", "state", "end_time", "stop_cause", "end_reason", "ad_hoc")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATEST_PRIMARY_CAUSE_FIELD_NUMBER: _ClassVar[int]
    LATEST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_DIAGNOSIS_TIME_FIELD_NUMBER: _ClassVar[int]
    VERDICT_COUNT_FIELD_NUMBER: _ClassVar[int]
    STALLED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_CAUSE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    AD_HOC_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    latest_status: _verdict_pb2.Status
    latest_primary_cause: _verdict_pb2.Cause
    latest_step: int
    last_diagnosis_time: _timestamp_pb2.Timestamp
    verdict_count: int
    stalled: bool
    state: RunState
    end_time: _timestamp_pb2.Timestamp
    stop_cause: _verdict_pb2.Cause
    end_reason: str
    ad_hoc: bool
    def __init__(self, run_id: _Optional[str] = ..., latest_status: _Optional[_Union[_verdict_pb2.Status, str]] = ..., latest_primary_cause: _Optional[_Union[_verdict_pb2.Cause, str]] = ..., latest_step: _Optional[int] = ..., last_diagnosis_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verdict_count: _Optional[int] = ..., stalled: _Optional[bool] = ..., state: _Optional[_Union[RunState, str]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_cause: _Optional[_Union[_verdict_pb2.Cause, str]] = ..., end_reason: _Optional[str] = ..., ad_hoc: _Optional[bool] = ...) -> None: ...

class CloseRunRequest(_message.Message):
    __slots__ = ("run_id", "state", "stop_cause", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STOP_CAUSE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    stop_cause: _verdict_pb2.Cause
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., stop_cause: _Optional[_Union[_verdict_pb2.Cause, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CloseRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchVerdictsRequest(_message.Message):
    __slots__ = ("run_id", "unhealthy_only")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_ONLY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    unhealthy_only: bool
    def __init__(self, run_id: _Optional[str] = ..., unhealthy_only: _Optional[bool] = ...) -> None: ...

class WatchVerdictsResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: _verdict_pb2.Verdict
    def __init__(self, verdict: _Optional[_Union[_verdict_pb2.Verdict, _Mapping]] = ...) -> None: ...
