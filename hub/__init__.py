"""The hub's own code: spawner, authenticator, configuration helpers and first-start secrets."""
