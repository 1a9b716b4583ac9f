#!/usr/bin/env python
"""The test project's manage.py (DJANGO_SETTINGS_MODULE picks the engine)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings_pg")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
