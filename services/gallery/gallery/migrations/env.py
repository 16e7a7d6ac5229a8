from gallery.models import SCHEMA, metadata
from genimage_common.database import run_migrations_online

run_migrations_online(metadata, SCHEMA)
