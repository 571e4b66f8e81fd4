-- wrk script: sends pre-generated, distinctly signed Twilio webhooks (one per request,
-- never repeating within a run unless the list runs out), counts every non-200 answer
-- as an error, and prints the results as one JSON line ("BENCHJSON {...}").
--
-- wrk -t1 -c16 -d10s --latency -s bench/requests.lua URL -- TEMPLATE LINES OFFSET COUNT
--   TEMPLATE  raw HTTP request with @SIG@, @SID@, @FROM@ markers (gen_requests.py)
--   LINES     one "SIG SID FROM" line per request
--   OFFSET    first line to use (0-based); COUNT lines are loaded from there
-- Use -t1 (one wrk thread): every thread would otherwise load and send the same list.

local pieces = {}   -- literal strings and marker names, in order
local reqs = {}     -- signature, sid, from per request
n = 0
local i = 0
non200 = 0
wrapped = 0
statuses = {}

local function split_template(text)
  local out, pos = {}, 1
  while true do
    local s, e, name = string.find(text, "@(%u+)@", pos)
    if not s then
      table.insert(out, { lit = string.sub(text, pos) })
      return out
    end
    table.insert(out, { lit = string.sub(text, pos, s - 1) })
    table.insert(out, { key = name })
    pos = e + 1
  end
end

function init(args)
  local template_path, lines_path = args[1], args[2]
  local offset, count = tonumber(args[3] or "0"), tonumber(args[4] or "1000000000")
  local f = assert(io.open(template_path, "rb"))
  pieces = split_template(f:read("*a"))
  f:close()
  local idx = 0
  for line in io.lines(lines_path) do
    if idx >= offset then
      if n >= count then break end
      local sig, sid, from = string.match(line, "^(%S+) (%S+) (%S+)$")
      n = n + 1
      reqs[n] = { SIG = sig, SID = sid, FROM = from }
    end
    idx = idx + 1
  end
  assert(n > 0, "no requests loaded from " .. lines_path)
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  local r = reqs[i]
  local buf = {}
  for k = 1, #pieces do
    local p = pieces[k]
    buf[k] = p.lit or r[p.key]
  end
  return table.concat(buf)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    local s = tostring(status)
    statuses[s] = (statuses[s] or 0) + 1
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local non = 0
  local wraps = 0
  local loaded = 0
  local st = {}
  for _, t in ipairs(threads) do
    non = non + t:get("non200")
    wraps = wraps + t:get("wrapped")
    loaded = loaded + t:get("n")
    local ts = t:get("statuses")
    for k, v in pairs(ts) do st[k] = (st[k] or 0) + v end
  end
  local stparts = {}
  for k, v in pairs(st) do table.insert(stparts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"non200":%d,"statuses":{%s},"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"wrapped":%d,"loaded":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    non, table.concat(stparts, ","), e.connect, e.read, e.write, e.timeout,
    wraps, loaded))
end
