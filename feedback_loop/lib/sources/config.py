"""The sources file: which stores feed the pipeline (docs/sources.md).

```yaml
sources:
  phoenix: {url: http://127.0.0.1:6006, project: chat, api_key_env: PHOENIX_API_KEY, kinds: [traces, feedback]}
  landing: {kinds: [feedback]}
ingest:
  pull_overlap_hours: 24
judge:  # optional: an OpenAI-compatible endpoint for the error modes the offline path is unsure of
  {base_url: http://127.0.0.1:8000/v1, model: qwen2.5-7b-instruct, api_key_env: JUDGE_API_KEY, max_calls_per_night: 200}
```
"""

from __future__ import annotations

from pathlib import Path

import yaml

SOURCES = ("landing", "otlp_files", "phoenix", "langfuse", "langfuse_export", "langsmith", "langsmith_export", "postgres")
SECTIONS = ("sources", "ingest", "judge")
JUDGE_KEYS = ("base_url", "model", "api_key_env", "max_calls_per_night", "max_confidence", "timeout_s", "retries")


class SourcesFileError(ValueError):
    pass


def read_sources_config(path: str | None) -> dict:
    """The file's settings; {} without a file. A name the file should not hold is an error that names it."""
    if path is None:
        return {}
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SourcesFileError(f"sources file {path}: {err}") from None
    if not isinstance(config, dict) or set(config) - set(SECTIONS):
        raise SourcesFileError(f"sources file {path}: the top level holds {', '.join(SECTIONS)} only")
    sources = config.get("sources") or {}
    if not isinstance(sources, dict) or set(sources) - set(SOURCES):
        raise SourcesFileError(f"sources file {path}: `sources` names {', '.join(SOURCES)} only, not {sorted(set(sources) - set(SOURCES)) if isinstance(sources, dict) else sources!r}")
    for name, settings in sources.items():
        if not isinstance(settings, dict):
            raise SourcesFileError(f"sources file {path}: `sources.{name}` is not a mapping")
        kinds = settings.get("kinds", [])
        if not isinstance(kinds, list) or set(kinds) - {"traces", "feedback"}:
            raise SourcesFileError(f"sources file {path}: `sources.{name}.kinds` lists traces and/or feedback, not {kinds!r}")
        root = settings.get("root")
        if isinstance(root, str) and "://" not in root:  # a folder named in the file is found from the file, wherever Dagster runs
            settings["root"] = str((Path(path).resolve().parent / root).resolve())
    judge = config.get("judge") or {}
    if not isinstance(judge, dict) or set(judge) - set(JUDGE_KEYS):
        raise SourcesFileError(f"sources file {path}: `judge` holds {', '.join(JUDGE_KEYS)} only")
    return {"sources": sources, "ingest": config.get("ingest") or {}, "judge": judge}
