"""The headless command line, `client-registry COMMAND` (cli.main): one module per command group. Every
change goes through store.Registry; with no command it opens the dashboard (tui/)."""
