"""A fake OpenTelemetry collector: OTLP/HTTP on loopback, parsing each protobuf export request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.loopback import LoopbackServer


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass
class FakeCollector(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    spans: list[dict] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def traces(self, request: web.Request) -> web.Response:
        self.content_types.append(request.headers.get("content-type", ""))
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "resource": resource,
                        }
                    )
        # Connection: close, so that no idle keep-alive connection holds up the server's stop.
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
            headers={"Connection": "close"},
        )

    def start(self) -> FakeCollector:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self.serve(app, "fake-otlp-collector")
        return self
