from django.urls import path

from . import views

urlpatterns = [
    path("signups/", views.create_signup),
    path("signups/<int:signup_id>/", views.show_signup),
    path("tasks/count/", views.count_signups_later),
    path("tasks/<str:result_id>/", views.show_task),
]
