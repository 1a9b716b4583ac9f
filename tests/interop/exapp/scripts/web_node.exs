# The kit's scripts/web.exs (Oban Web at http://127.0.0.1:$PORT/oban) with node.exs's
# arguments, so that a test runs it like a node: it halts by itself after SECONDS.
# Usage: DB=.. [PORT=4001] [NODE=web-dash] mix run scripts/web_node.exs SECONDS ["q:5,..."]
[secs | rest] = System.argv()
deadline = String.to_integer(secs) * 1000

spawn(fn ->
  Process.sleep(deadline)
  IO.puts("web_node: #{secs}s are up; halting")
  System.halt(0)
end)

System.argv(rest)
Code.eval_file("scripts/web.exs")
