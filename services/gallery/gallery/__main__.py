"""``python -m gallery`` serves; ``python -m gallery migrate`` upgrades the schema;
``python -m gallery rebuild`` replays the streams into a fresh schema and swaps it in."""

import sys

from .settings import GallerySettings


def main() -> None:
    settings = GallerySettings()
    args = sys.argv[1:]
    if args == ["migrate"]:
        from pathlib import Path

        from genimage_common.database import upgrade

        upgrade(Path(__file__).parent / "migrations", settings.database_url)
        return
    if args[:1] == ["rebuild"]:
        from .rebuild import main as rebuild_main

        rebuild_main(settings, args[1:])
        return
    from genimage_common.worker import serve

    from .app import create_app

    serve(create_app(settings), settings)


main()
