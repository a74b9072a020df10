from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing.config import register
        from billing.invoicing import services as invoicing
        from billing.ledger import write_ledger_batch
        from billing.stripe.sync import queue_push, queue_void
        from observability.logbuffer import register_batch_hook

        register()
        # Finalized and voided invoices go to Stripe (when it is configured) after commit.
        if queue_push not in invoicing.AFTER_FINALIZE:
            invoicing.AFTER_FINALIZE.append(queue_push)
            invoicing.AFTER_VOID.append(queue_void)
        # The spend ledger goes into the call-log rows' own transaction: the money and the logs it sums
        # commit together (billing.ledger).
        register_batch_hook(write_ledger_batch)
