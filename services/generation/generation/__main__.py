"""``python -m generation`` starts the worker."""

from genimage_common.worker import serve

from .app import create_app
from .settings import GenerationSettings

settings = GenerationSettings()
serve(create_app(settings), settings)
