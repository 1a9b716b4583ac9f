from django.contrib import admin
from django.urls import path
from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", views.create_order),
    path("orders/async/", views.create_order_async),
    path("orders/async/enqueue/", views.create_order_async_enqueue),
]
