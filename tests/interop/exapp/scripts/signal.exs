# Send one signal through Elixir's public API, as an Elixir node would, and exit.
# Usage: DB=.. mix run scripts/signal.exs pause QUEUE | resume QUEUE | scale QUEUE LIMIT |
#        cancel JOB_ID   (optional env TARGET_NODE: address one node, as `node:` does)
{:ok, _} = ExApp.Repo.start_link()
{:ok, _} = Oban.start_link(repo: ExApp.Repo, name: Oban, node: "ex-signaller", queues: false,
  plugins: false, peer: false)
node = case System.get_env("TARGET_NODE") do
  nil -> []
  target -> [node: target]
end

result =
  case System.argv() do
    ["pause", q] -> Oban.pause_queue([queue: q] ++ node)
    ["resume", q] -> Oban.resume_queue([queue: q] ++ node)
    ["scale", q, limit] -> Oban.scale_queue([queue: q, limit: String.to_integer(limit)] ++ node)
    ["cancel", id] -> Oban.cancel_job(String.to_integer(id))
  end

IO.puts("sent #{inspect(System.argv())}: #{inspect(result)}")
