from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing.config import register
        from billing.ledger import write_ledger_batch
        from observability.logbuffer import register_batch_hook

        register()
        # The spend ledger goes into the call-log rows' own transaction: the money and the logs it sums
        # commit together (billing.ledger).
        register_batch_hook(write_ledger_batch)
