# node.exs that prints a line whenever one of its queues changes state, so that a test sees
# Python's signals act on an Elixir node: "queue NAME paused=BOOL limit=N running=[IDS]".
# Usage: DB=.. mix run scripts/signal_node.exs SECONDS "q:10,..."; env NODE
[secs, qs | _] = System.argv()
queues = for q <- String.split(qs, ","), [name, lim] = String.split(q, ":"), do: {String.to_atom(name), String.to_integer(lim)}
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: System.get_env("NODE", "ex-node"),
  queues: queues, plugins: [])
IO.puts("elixir node up queues=#{inspect(queues)}")
stop = System.monotonic_time(:millisecond) + String.to_integer(secs) * 1000

Stream.repeatedly(fn -> :tick end)
|> Enum.reduce_while(%{}, fn _, seen ->
  if System.monotonic_time(:millisecond) > stop do
    {:halt, seen}
  else
    now =
      for {q, _} <- queues, into: %{} do
        %{paused: paused, limit: limit, running: running} = Oban.check_queue(queue: q)
        {q, {paused, limit, Enum.sort(running)}}
      end

    for {q, {paused, limit, running} = state} <- now, Map.get(seen, q) != state do
      IO.puts("queue #{q} paused=#{paused} limit=#{limit} running=#{inspect(running)}")
    end

    Process.sleep(50)
    {:cont, now}
  end
end)
