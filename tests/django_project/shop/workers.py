"""Workers of the test app: imported at startup by oban.contrib.django (OBAN_AUTODISCOVER)."""

from django.db import transaction

from oban import Job, worker

from .models import Order


@worker(queue="mail")
class SendReceipt:
    """Uses the ORM inside a job: marks the order, and enqueues a follow-up in the same
    atomic() block (on the job thread's own Django connection)."""

    def process(self, job: Job) -> None:
        with transaction.atomic():
            Order.objects.filter(id=job.args["order"]).update(receipt_sent=True)
            FollowUp.enqueue_sync({"order": job.args["order"]})


@worker(queue="mail")
class FollowUp:
    def process(self, job: Job) -> None:
        return None
