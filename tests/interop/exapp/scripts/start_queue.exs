# Start a queue through Elixir's public API, Oban.start_queue/2, as an Elixir node would, and
# exit. OPTION=VALUE pairs add options: local_only=BOOL, paused=BOOL, refresh_interval=MS,
# node=NAME (integers and booleans are parsed; anything else stays a string).
# Usage: DB=.. mix run scripts/start_queue.exs QUEUE LIMIT [OPTION=VALUE ...]
[queue, limit | pairs] = System.argv()
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: "ex-starter", queues: false,
  plugins: false, peer: false)

parse = fn
  "true" -> true
  "false" -> false
  value ->
    case Integer.parse(value) do
      {number, ""} -> number
      _ -> value
    end
end

extra =
  for pair <- pairs do
    [key, value] = String.split(pair, "=", parts: 2)
    {String.to_atom(key), parse.(value)}
  end

result = Oban.start_queue([queue: queue, limit: String.to_integer(limit)] ++ extra)
IO.puts("sent start #{inspect([queue: queue, limit: limit] ++ extra)}: #{inspect(result)}")
