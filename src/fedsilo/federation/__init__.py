"""The contracts of a federation: tasks and replies, the session context a workflow talks
through, the executor a client runs, and the package registry. Implementations live
elsewhere: the server's engine and the in-process runner implement
:class:`SessionContext`; :mod:`fedsilo.client` implements :class:`ExecutorContext`."""

from fedsilo.federation.context import AskMixin, Checkpoint, SessionContext, SessionInfo
from fedsilo.federation.executor import (
    Executor,
    ExecutorContext,
    ExportedModel,
    FastExchange,
    incoming_sealed,
)
from fedsilo.federation.package import (
    PACKAGE_SOURCES,
    REGISTRY,
    DataConfigBase,
    ExecutorFactory,
    ModelPackage,
    get_package,
    package_names,
)
from fedsilo.federation.task import (
    SEALED_ARRAY,
    Failure,
    FailureCause,
    Outcome,
    Participant,
    Reply,
    Sealed,
    Task,
    TaskGroup,
    sealed_arrays,
    split_sealed,
)

__all__ = [
    "PACKAGE_SOURCES",
    "REGISTRY",
    "SEALED_ARRAY",
    "AskMixin",
    "Checkpoint",
    "DataConfigBase",
    "Executor",
    "ExecutorContext",
    "ExecutorFactory",
    "ExportedModel",
    "Failure",
    "FailureCause",
    "FastExchange",
    "ModelPackage",
    "Outcome",
    "Participant",
    "Reply",
    "Sealed",
    "SessionContext",
    "SessionInfo",
    "Task",
    "TaskGroup",
    "get_package",
    "incoming_sealed",
    "package_names",
    "sealed_arrays",
    "split_sealed",
]
