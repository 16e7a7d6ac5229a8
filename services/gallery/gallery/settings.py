from pydantic_settings import SettingsConfigDict

from genimage_common.settings import CommonSettings


class GallerySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GALLERY_", extra="ignore", populate_by_name=True)
    service_name = "gallery"

    port: int = 8003
    trash_retention_days: int = 30
