from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"

    def ready(self) -> None:
        # Per flushed batch of the call-log buffer, never per request.
        from observability import bodies, logbuffer, rollups

        logbuffer.register_hook(rollups.write_rollups)
        logbuffer.register_hook(bodies.write_bodies)
        from observability import stored_responses

        # In the call rows' transaction: a response is kept exactly when its call is logged.
        logbuffer.register_batch_hook(stored_responses.write_stored)
        from observability import scores
        from tenants.config import EXTENSIONS

        EXTENSIONS["scores"] = (scores.parse_scores, scores.apply_scores)
        from observability import evaluators

        # After the scores they give (an extension's apply runs in registration order).
        EXTENSIONS["evaluators"] = (evaluators.parse_evaluators, evaluators.apply_evaluators)
        # After the bodies are stored: evaluators read them.
        logbuffer.register_hook(evaluators.on_calls)
        from observability import exposition, traces

        logbuffer.register_hook(exposition.record_batch)
        if traces.enabled():  # tracing off costs nothing, not even a hook call
            logbuffer.register_hook(traces.export_batch)
