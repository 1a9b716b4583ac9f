# node.exs with the staging interval as a setting, and a line for every staging pass that made
# jobs available (when, how many, how long), for the staging-race test.
# Usage: DB=.. [STAGE_INTERVAL_MS=1000] mix run scripts/staging_node.exs SECONDS "q:10,..."; env NODE
[secs, qs | _] = System.argv()
queues = for q <- String.split(qs, ","), [name, lim] = String.split(q, ":"), do: {String.to_atom(name), String.to_integer(lim)}
stage_interval = String.to_integer(System.get_env("STAGE_INTERVAL_MS", "1000"))
{:ok, _} = ExApp.Repo.start_link()

:telemetry.attach("staging", [:oban, :plugin, :stop], fn _event, measure, meta, _ ->
  if meta.plugin == Oban.Stager and Map.get(meta, :staged_count, 0) > 0 do
    ms = System.convert_time_unit(measure.duration, :native, :microsecond) / 1000
    IO.puts("#{Time.utc_now()} ex staged #{meta.staged_count} in #{ms} ms")
  end
end, nil)

{:ok, _} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: System.get_env("NODE", "ex-node"),
  queues: queues, plugins: [], stage_interval: stage_interval)
IO.puts("elixir node up queues=#{inspect(queues)} stage_interval=#{stage_interval}ms leader?=#{Oban.Peer.leader?(Oban)}")
Process.sleep(String.to_integer(secs) * 1000)
