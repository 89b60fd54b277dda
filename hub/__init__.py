"""The hub's own code: spawner, authenticator, configuration helpers and first-start secrets."""

# The release, in semantic versioning, and its one home: pyproject.toml reads it, the settings
# table stamps it into the images' default tags (hub/settings/table.py, `make config-docs`), the
# images carry it as a label, the hub's pages and `gpuhub-gpus --version` show it. CHANGELOG.md
# says what each release changed.
__version__ = "1.0.0"
