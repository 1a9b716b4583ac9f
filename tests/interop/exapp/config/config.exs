# The kit's exapp/config/config.exs, with the server's host and port taken from the
# environment (the kit hard-codes 127.0.0.1:5432): the interop tests run every Elixir script
# against a private PostgreSQL on a free port. The tests copy this file over the kit's copy in
# their cache directory; /work/shared is never changed.
import Config
config :ex_app, ecto_repos: [ExApp.Repo]
config :ex_app, ExApp.Repo,
  database: System.get_env("DB", "exweb_a"),
  hostname: System.get_env("DB_HOST", "127.0.0.1"),
  port: String.to_integer(System.get_env("DB_PORT", "5432")),
  username: "postgres", password: "",
  pool_size: 10, log: false
config :logger, level: String.to_atom(System.get_env("LOG_LEVEL", "info"))
