-- POST a fixed body (file BENCH_BODY), rotating the API key over the lines of BENCH_KEYS and
-- the path over the lines of BENCH_PATHS (one request each, in order: a cache sized below the
-- number of keys misses every time); print the same JSON summary as post.lua at the end.
-- The key index advances every request; the path index every request plus once per full pass
-- over the keys, so with 5,000 keys and 50 paths each key meets every path in turn.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local keys, paths = {}, {}
for line in io.lines(os.getenv("BENCH_KEYS")) do
  if #line > 0 then keys[#keys + 1] = line end
end
for line in io.lines(os.getenv("BENCH_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end
assert(#keys > 0 and #paths > 0, "BENCH_KEYS and BENCH_PATHS must name non-empty files")
local headers = {["Content-Type"] = "application/json", ["x-api-key"] = keys[1]}
local i = 0

function request()
  local k = i % #keys
  local p = (i + (i - k) / #keys) % #paths
  i = i + 1
  headers["x-api-key"] = keys[k + 1]
  return wrk.format("POST", paths[p + 1], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
