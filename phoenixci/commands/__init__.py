"""The phoenixci subcommands that need host-side dependencies (imported only when run)."""
