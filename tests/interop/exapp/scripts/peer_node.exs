# An Elixir node (node.exs's plugins: Pruner, Lifeline) that stops gracefully on request and
# prints, each line starting with the UTC time, what the leadership tests need:
#   "T ex up"                            Oban started
#   "T ex leader=true"                   Oban.Peer.leader?/1 (polled every 20 ms) became true
#   "T ex leader=false last_true=T2"     ...became false; T2: its last true reply
#   "T ex staged N"                      a staging pass of this node as leader (N jobs staged)
#   "T ex pruned N" / "T ex rescued N"   the Pruner / Lifeline acted on N jobs
#   "T ex stopping leader=B last_true=T2"   STOP_FILE appeared: Oban's supervisor is stopped
#                                        as an application stops it (queues drain, the peer
#                                        deletes its oban_peers row and sends {"down": "Oban"})
#   "T ex stopped"                       then the script ends
# node.exs instead halts on SIGTERM, its row left to expire.
# Usage: DB=.. STOP_FILE=path mix run scripts/peer_node.exs SECONDS "q:10,..."
#        env NODE, STAGE_INTERVAL_MS (1000), PLUGIN_INTERVAL_MS (Pruner, Lifeline; 5000),
#        PRUNE_MAX_AGE_S (86400, as node.exs: the Pruner's own default, 60 s, would prune the
#        tests' completed jobs before they are counted)
[secs, qs | _] = System.argv()
queues = for q <- String.split(qs, ","), [name, lim] = String.split(q, ":"), do: {String.to_atom(name), String.to_integer(lim)}
stop_file = System.fetch_env!("STOP_FILE")
stage_interval = String.to_integer(System.get_env("STAGE_INTERVAL_MS", "1000"))
plugin_interval = String.to_integer(System.get_env("PLUGIN_INTERVAL_MS", "5000"))
max_age = String.to_integer(System.get_env("PRUNE_MAX_AGE_S", "86400"))
{:ok, _} = ExApp.Repo.start_link()

defmodule PeerNode do
  def now, do: DateTime.utc_now() |> DateTime.to_iso8601()

  def say(text), do: IO.puts("#{now()} ex #{text}")

  def handle([:oban, :plugin, :stop], _measure, %{plugin: Oban.Stager, leader: true} = meta, _) do
    say("staged #{Map.get(meta, :staged_count, 0)}")
  end

  def handle([:oban, :plugin, :stop], _measure, %{plugin: Oban.Plugins.Pruner} = meta, _) do
    count = Map.get(meta, :pruned_count, 0)
    if count > 0, do: say("pruned #{count}")
  end

  def handle([:oban, :plugin, :stop], _measure, %{plugin: Oban.Plugins.Lifeline} = meta, _) do
    count = length(Map.get(meta, :rescued_jobs, [])) + length(Map.get(meta, :discarded_jobs, []))
    if count > 0, do: say("rescued #{count}")
  end

  def handle([:oban, :job, :exception], _measure, meta, _) do
    say("job exception #{meta.job.id}: #{inspect(meta[:reason] || meta[:error]) |> String.slice(0, 200)}")
  end

  def handle(_event, _measure, _meta, _), do: :ok

  # Poll leadership until STOP_FILE exists or the time is up; returns the last state.
  def watch(stop_file, deadline, leader, last_true) do
    cond do
      File.exists?(stop_file) or System.monotonic_time(:millisecond) > deadline ->
        {leader, last_true}

      true ->
        current = Oban.Peer.leader?(Oban)
        at = now()

        cond do
          current and not leader -> say("leader=true")
          leader and not current -> say("leader=false last_true=#{last_true}")
          true -> :ok
        end

        Process.sleep(20)
        watch(stop_file, deadline, current, if(current, do: at, else: last_true))
    end
  end
end

:telemetry.attach_many("peer-node", [[:oban, :plugin, :stop], [:oban, :job, :exception]],
  &PeerNode.handle/4, nil)

{:ok, oban} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: System.get_env("NODE", "ex-node"),
  queues: queues, stage_interval: stage_interval,
  plugins: [{Oban.Plugins.Pruner, interval: plugin_interval, max_age: max_age},
            {Oban.Plugins.Lifeline, interval: plugin_interval}])
PeerNode.say("up queues=#{inspect(queues)}")

deadline = System.monotonic_time(:millisecond) + String.to_integer(secs) * 1000
{leader, last_true} = PeerNode.watch(stop_file, deadline, false, nil)
PeerNode.say("stopping leader=#{leader} last_true=#{last_true}")
:ok = Supervisor.stop(oban)
PeerNode.say("stopped")
