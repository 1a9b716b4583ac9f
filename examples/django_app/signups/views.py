"""A small JSON API (called with curl, hence no CSRF token)."""

from django.db import transaction
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Signup
from .tasks import TaskResultDoesNotExist, count_signups
from .workers import WelcomeEmail


@csrf_exempt
@require_POST
def create_signup(request: HttpRequest) -> JsonResponse:
    """The signup and its welcome job commit together, or neither does."""
    with transaction.atomic():
        signup = Signup.objects.create(email=request.POST["email"])
        job = WelcomeEmail.enqueue_sync({"signup_id": signup.id})
    return JsonResponse({"signup": signup.id, "job": job.id}, status=201)


@require_GET
def show_signup(request: HttpRequest, signup_id: int) -> JsonResponse:
    signup = get_object_or_404(Signup, id=signup_id)
    return JsonResponse({"email": signup.email, "welcomed": signup.welcomed})


@csrf_exempt
@require_POST
def count_signups_later(request: HttpRequest) -> JsonResponse:
    result = count_signups.enqueue(welcomed=True)
    return JsonResponse({"task": result.id, "status": result.status}, status=201)


@require_GET
def show_task(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = count_signups.get_result(result_id)  # the job, read back
    except TaskResultDoesNotExist:
        raise Http404(f"no task {result_id}") from None
    value = result.return_value if result.status == "SUCCESSFUL" else None
    return JsonResponse({"status": result.status, "value": value})
