-- wrk script: POST the JSON bodies listed one per line in $BODIES to $BENCH_PATH, in turn.
local bodies = {}
local i = 0
local path = os.getenv("BENCH_PATH") or "/v1/embeddings"
init = function(args)
  for line in io.lines(os.getenv("BODIES")) do table.insert(bodies, line) end
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[i])
end
