from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from genimage_common.catalog import DEFAULT_MODELS_FILE
from genimage_common.redelivery import BACKOFF, MAX_DELIVER, RedeliveryPolicy
from genimage_common.settings import CommonSettings, shared


class GenerationSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GENERATION_", extra="ignore", populate_by_name=True)
    service_name = "generation"

    port: int = 8002
    # Jobs one replica runs at once; it fetches a message only when a slot is free.
    concurrency: int = Field(2, ge=1, le=64)
    models_file: Path = shared(DEFAULT_MODELS_FILE, "GENIMAGE_MODELS")
    # Minimum spacing of progress events per job.
    progress_interval_s: float = Field(0.25, ge=0)

    # JetStream: a job not acked nor marked in progress for this long is redelivered.
    ack_wait_s: float = Field(30, ge=1, le=3600)
    # A job failing unexpectedly for its own reasons (a corrupt manifest, a bug) is redelivered
    # after these delays (s), at most max_deliveries times; then it fails and goes to the DLQ.
    # Deliveries that failed because object storage or NATS was away do not count: those are
    # retried with the shared TRANSIENT_RETRY_* backoff for as long as the outage lasts. The
    # worker's other consumers (cancels, deleted images, expired holds) follow the same bound.
    redelivery_backoff_s: list[float] = Field(default_factory=lambda: list(BACKOFF), min_length=1)
    max_deliveries: int = Field(MAX_DELIVER, ge=1, le=100)
    # Running jobs get this long to finish on shutdown before they are handed back.
    shutdown_grace_s: float = Field(10, ge=0)

    # Provider calls: attempts per call (first try included) and exponential backoff with jitter.
    retry_attempts: int = Field(4, ge=1, le=20)
    retry_base_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(20, gt=0)
    # A job must end this long before its billing hold expires (time to store and publish).
    deadline_margin_s: float = Field(60, ge=0)
    # Upper bound on one job, whatever the hold says.
    max_job_s: float = Field(600, gt=0)

    # NATS KV bucket shared by the replicas: cancel requests and terminal outcomes per generation.
    state_bucket: str = Field("generation_jobs", pattern=r"^[a-zA-Z0-9_-]+$")
    state_ttl_s: float = Field(7 * 24 * 3600, gt=0)

    # Input images are uploads the gateway re-encoded; this guards the decoder anyway.
    max_input_pixels: int = Field(40_000_000, gt=0)

    def redelivery_policy(self) -> RedeliveryPolicy:
        """The worker's one redelivery policy: its job intake and its other consumers alike."""
        return RedeliveryPolicy.from_settings(
            self, max_deliver=self.max_deliveries, backoff_s=tuple(self.redelivery_backoff_s)
        )
