"""``python -m gateway`` serves the API; ``python -m gateway migrate`` upgrades the schema."""

import sys

from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    if sys.argv[1:] == ["migrate"]:
        from pathlib import Path

        from genimage_common.database import upgrade

        upgrade(Path(__file__).parent / "migrations", settings.database_url)
        return
    from genimage_common.worker import serve

    from .app import create_app

    serve(create_app(settings), settings)


main()
