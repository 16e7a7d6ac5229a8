from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from genimage_common.catalog import DEFAULT_MODELS_FILE
from genimage_common.settings import CommonSettings, shared


class GenerationSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GENERATION_", extra="ignore", populate_by_name=True)
    service_name = "generation"

    port: int = 8002
    concurrency: int = Field(2, ge=1, le=64)
    models_file: Path = shared(DEFAULT_MODELS_FILE, "GENIMAGE_MODELS")
    # Minimum spacing of progress events per job.
    progress_interval_s: float = 0.25
