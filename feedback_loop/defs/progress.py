"""A logger that prints one line per finished step: what `feedback-loop run` shows as a night goes."""

import logging
import sys

import dagster as dg


class _StepLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_meta", {}).get("dagster_event")
        if event is None or event.event_type_value not in ("STEP_SUCCESS", "STEP_FAILURE"):
            return
        done = "done" if event.event_type_value == "STEP_SUCCESS" else "FAILED"
        print(f"  {event.step_key}: {done}", file=sys.stderr, flush=True)


@dg.logger(description="One line per finished step, on stderr.")
def step_progress(_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger("feedback_loop_progress", level=logging.DEBUG)
    log.addHandler(_StepLines())
    return log
