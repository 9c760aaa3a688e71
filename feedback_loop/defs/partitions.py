"""Daily partitions shared by every asset, and the late-feedback window."""

import os

import dagster as dg

START_DATE = os.environ.get("FEEDBACK_LOOP_START_DATE", "2025-01-01")
LATE_FEEDBACK_DAYS = int(os.environ.get("FEEDBACK_LOOP_LATE_FEEDBACK_DAYS", "7"))

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
FIRST_DAY = daily_partitions.start.strftime("%Y-%m-%d")
