"""A view that writes a model and enqueues a job in one atomic() block."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from oban.contrib.django import aenqueue

from .models import Order
from .workers import SendReceipt


def create_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(email=request.POST["email"])
        job = SendReceipt.enqueue_sync({"order": order.id})
        if request.POST.get("fail"):
            raise RuntimeError("the view failed after enqueueing")
    return JsonResponse({"order": order.id, "job": job.id})


async def create_order_async_enqueue(request: HttpRequest) -> JsonResponse:
    """``await Worker.enqueue`` in an async view: on Django's connection, as aenqueue."""
    order = await Order.objects.acreate(email=request.POST["email"])
    job = await SendReceipt.enqueue({"order": order.id})
    return JsonResponse({"order": order.id, "job": job.id})


async def create_order_async(request: HttpRequest) -> JsonResponse:
    order = await Order.objects.acreate(email=request.POST["email"])
    job = await aenqueue(SendReceipt.new({"order": order.id}))
    return JsonResponse({"order": order.id, "job": job.id})
