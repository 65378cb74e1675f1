-- Shared by the case scripts: a done() hook that prints one machine-readable line for bench.py.
--
-- wrk counts a response with status >= 400 as errors.status; bench.py checks each case once before
-- loading it, so a 3xx (e.g. a trailing-slash redirect) is caught there. No response() hook is set
-- on purpose: it would make wrk hand every response to Lua and cost client CPU on a 2-core box.
local M = {}

function M.getenv(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then
    return default
  end
  return value
end

function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function M.bearer()
  local token = M.getenv("WRK_TOKEN", nil)
  if token then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)
  ))
end

return M
