"""How the services start (Label Studio in its own virtualenv: :mod:`infra.labelstudio`)."""
