"""Daily partitions shared by every asset, and the late-feedback window."""

import os

import dagster as dg

START_DATE = os.environ.get("FEEDBACK_LOOP_START_DATE", "2025-01-01")
LATE_FEEDBACK_DAYS = int(os.environ.get("FEEDBACK_LOOP_LATE_FEEDBACK_DAYS", "7"))
# How far back an event that links to no trace of its window is looked up, to tell "too late" from "unknown".
TOO_LATE_LOOKBACK_DAYS = int(os.environ.get("FEEDBACK_LOOP_TOO_LATE_LOOKBACK_DAYS", "90"))

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
FIRST_DAY = daily_partitions.start.strftime("%Y-%m-%d")
