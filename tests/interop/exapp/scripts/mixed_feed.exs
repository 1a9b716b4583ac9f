# Insert MyApp.Echo jobs from Elixir at RATE jobs/s for SECONDS, for the mixed run: every
# 100 ms a tenth of RATE; two jobs in three into SHARED, one into OWN; every other job
# scheduled 0.2 to 2.5 s ahead (so the leader stages it), the rest available at once. Each job
# sleeps SLEEP_MS (mode "sleep"). Every id goes into ins_log with src 'ex'.
# Usage: DB=.. mix run scripts/mixed_feed.exs SECONDS RATE SHARED OWN SLEEP_MS
[secs, rate, shared, own, sleep_ms] = System.argv()
per_tick = div(String.to_integer(rate), 10)
sleep_ms = String.to_integer(sleep_ms)
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, queues: false, plugins: false, peer: false, name: Oban,
  node: "ex-feeder")
start = System.monotonic_time(:millisecond)
ticks = String.to_integer(secs) * 10

total =
  Enum.reduce(0..(ticks - 1), 0, fn tick, acc ->
    Process.sleep(max(start + tick * 100 - System.monotonic_time(:millisecond), 0))
    now = DateTime.utc_now()

    jobs =
      for i <- 1..per_tick do
        seq = tick * per_tick + i
        queue = if rem(seq, 3) == 0, do: own, else: shared
        args = %{"mode" => "sleep", "ms" => sleep_ms, "src" => "ex"}

        if rem(seq, 2) == 0 do
          due = DateTime.add(now, 200 + :rand.uniform(2300), :millisecond)
          MyApp.Echo.new(args, queue: queue, scheduled_at: due)
        else
          MyApp.Echo.new(args, queue: queue)
        end
      end

    ids = Oban.insert_all(jobs) |> Enum.map(& &1.id)
    ExApp.Repo.query!("INSERT INTO ins_log (job_id, src) SELECT unnest($1::bigint[]), 'ex'", [ids])
    acc + length(ids)
  end)

IO.puts("mixed_feed inserted #{total} in #{System.monotonic_time(:millisecond) - start} ms")
