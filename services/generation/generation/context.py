"""What the worker's job code and event handlers share, created by the app's lifespan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from faststream.nats import NatsBroker

from genimage_common.catalog import ModelSpec
from genimage_common.storage import ObjectStore

from .cancellation import CancelRegistry
from .chain import ProviderChain
from .settings import GenerationSettings
from .state import JobState


@dataclass
class JobContext:
    broker: NatsBroker
    store: ObjectStore
    catalog: Mapping[str, ModelSpec]
    chain: ProviderChain
    state: JobState
    cancels: CancelRegistry
    settings: GenerationSettings
