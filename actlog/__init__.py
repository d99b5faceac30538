"""actlog: the client, CLI and launcher of the activation-logging stack, and the research
tools built on them.

    from actlog import StorageClient, RecordFilter

    with StorageClient() as client:
        for record in client.iter_records(RecordFilter(labels={"hallucinated": "true"})):
            rows = client.get_activations(record, layers=[-1])

Subpackages: `actlog.repe` (capture, concept pairs, control vectors), `actlog.probes`
(linear probes on stored records), `actlog.datasets` (Parquet exports), `actlog.hallulens`
(the HalluLens benchmark through the stack); `actlog.launcher` runs the stack locally.
"""

from actlog._exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "StorageClient": "client",
        "Record": "records",
        "StorageStats": "records",
        "DeletedRecord": "records",
        "Features": "features",
        "RecordFilter": "filters",
        "ActlogError": "errors",
        "InvalidArgumentError": "errors",
        "NotFoundError": "errors",
        "FailedPreconditionError": "errors",
        "ResourceExhaustedError": "errors",
        "UnavailableError": "errors",
        "DeadlineExceededError": "errors",
        "InternalError": "errors",
        "WaitTimeoutError": "errors",
        "Stack": "launcher",
        "StackConfig": "launcher",
        "export_record": "export",
    },
)
