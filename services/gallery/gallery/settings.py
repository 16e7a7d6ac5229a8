from pydantic import Field
from pydantic_settings import SettingsConfigDict

from genimage_common.settings import CommonSettings


class GallerySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GALLERY_", extra="ignore", populate_by_name=True)
    service_name = "gallery"

    port: int = 8003
    # How long a trashed image can be restored before it is purged (fractions allowed).
    trash_retention_days: float = Field(30, ge=0)
    purge_interval_s: float = Field(60, gt=0)
    purge_batch: int = Field(100, ge=1, le=10_000)
    max_boards_per_user: int = Field(500, ge=1)
    # Events applied per transaction by `python -m gallery rebuild`.
    rebuild_batch: int = Field(500, ge=1, le=10_000)
