# node.exs that prints a line whenever one of its queues, including one started later by a
# start signal, appears or changes, with the producer's dispatch cooldown in ms, and whenever
# its Oban.Midwife (which handles start signals) is a new process (a crash restarts it):
#   "queue NAME paused=BOOL limit=N cooldown=MS"    "midwife #PID<...>"
# Usage: DB=.. mix run scripts/queue_node.exs SECONDS "q:10,..."; env NODE
[secs, qs | _] = System.argv()
queues = for q <- String.split(qs, ","), [name, lim] = String.split(q, ":"), do: {String.to_atom(name), String.to_integer(lim)}
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: System.get_env("NODE", "ex-node"),
  queues: queues, plugins: [])
IO.puts("elixir node up queues=#{inspect(queues)}")
stop = System.monotonic_time(:millisecond) + String.to_integer(secs) * 1000

producers = fn ->
  for {queue, pid} <- Registry.select(Oban.Registry, [{{{Oban, {:producer, :"$1"}}, :"$2", :_}, [], [{{:"$1", :"$2"}}]}]),
      state = (try do :sys.get_state(pid, 1_000) catch :exit, _ -> nil end),
      state != nil,
      into: %{} do
    {queue, {state.meta.paused, state.meta.limit, state.dispatch_cooldown}}
  end
end

Stream.repeatedly(fn -> :tick end)
|> Enum.reduce_while({%{}, nil}, fn _, {seen, midwife} ->
  if System.monotonic_time(:millisecond) > stop do
    {:halt, :ok}
  else
    now = producers.()

    for {q, {paused, limit, cooldown} = state} <- Enum.sort(now), Map.get(seen, q) != state do
      IO.puts("queue #{q} paused=#{paused} limit=#{limit} cooldown=#{cooldown}")
    end

    current = Oban.Registry.whereis(Oban, Oban.Midwife)
    if current != midwife, do: IO.puts("midwife #{inspect(current)}")

    Process.sleep(50)
    {:cont, {now, current}}
  end
end)
