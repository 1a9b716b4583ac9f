# Insert MyApp.Echo jobs (mode "ok") from Elixir for SECONDS: each second a batch of BATCH jobs
# into QUEUE, all due at the same instant, the next whole second of the clock (a Python feeder
# that does the same makes both languages' jobs due together); staging, not the insert, makes
# them available. Every id goes into ins_log with src 'ex'.
# Usage: DB=.. mix run scripts/race_feed.exs SECONDS QUEUE BATCH
[secs, queue, batch] = System.argv()
batch = String.to_integer(batch)
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, queues: false, plugins: false, peer: false, name: Oban)
stop = System.monotonic_time(:millisecond) + String.to_integer(secs) * 1000

total =
  Stream.repeatedly(fn -> :tick end)
  |> Enum.reduce_while(0, fn _, acc ->
    if System.monotonic_time(:millisecond) > stop do
      {:halt, acc}
    else
      now = DateTime.utc_now()
      due = now |> DateTime.truncate(:second) |> DateTime.add(1, :second)
      args = %{"mode" => "ok", "src" => "ex"}
      jobs = for _ <- 1..batch, do: MyApp.Echo.new(args, queue: queue, scheduled_at: due, tags: ["race"])
      ids = Oban.insert_all(jobs) |> Enum.map(& &1.id)
      ExApp.Repo.query!("INSERT INTO ins_log (job_id, src) SELECT unnest($1::bigint[]), 'ex'", [ids])
      # Sleep past the instant these jobs are due, so each second gets one batch.
      Process.sleep(max(DateTime.diff(due, DateTime.utc_now(), :millisecond), 0) + 10)
      {:cont, acc + length(ids)}
    end
  end)

IO.puts("race_feed inserted #{total}")
