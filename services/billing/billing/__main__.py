"""``python -m billing`` serves; ``python -m billing migrate`` upgrades the schema."""

import sys

from .settings import BillingSettings


def main() -> None:
    settings = BillingSettings()
    if sys.argv[1:] == ["migrate"]:
        from pathlib import Path

        from genimage_common.database import upgrade

        upgrade(Path(__file__).parent / "migrations", settings.database_url)
        return
    from genimage_common.worker import serve

    from .app import create_app

    serve(create_app(settings), settings)


main()
