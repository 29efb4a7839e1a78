-- wrk script of the soak run (benches/soak.py): every request carries a different set of trace
-- headers, in every format the filter reads, each valid or broken at random, plus baggage in
-- all three spellings, force tokens, and the request line the sampling rules match.
-- Seeded per thread, so two runs send the same sequence.

local hexdigits = "0123456789abcdef"
local junk = { "", "-", "zz", "\t", ";;", "==", "%", "ff-ff", "\\", "Root=", "0000000000000000" }

local function hex(n)
  local t = {}
  for i = 1, n do
    local d = math.random(16)
    t[i] = hexdigits:sub(d, d)
  end
  return table.concat(t)
end

local function dec(n)
  local t = { tostring(math.random(9)) }
  for i = 2, n do t[i] = tostring(math.random(0, 9)) end
  return table.concat(t)
end

-- A valid value, or one broken in one of a few ways: truncated, a byte replaced, junk
-- inserted, upper-cased, doubled, or emptied.
local function maybe_break(value)
  local r = math.random(8)
  if r == 1 then
    return value:sub(1, math.random(0, #value))
  elseif r == 2 and #value > 0 then
    local i = math.random(#value)
    return value:sub(1, i - 1) .. string.char(math.random(33, 126)) .. value:sub(i + 1)
  elseif r == 3 then
    local i = math.random(0, #value)
    return value:sub(1, i) .. junk[math.random(#junk)] .. value:sub(i + 1)
  elseif r == 4 then
    return value:upper()
  elseif r == 5 then
    return value .. value
  elseif r == 6 then
    return ""
  end
  return value
end

local flags = { "00", "01", "03" }

local function tracestate()
  local members = { "rojo=" .. hex(16) }
  if math.random(2) == 1 then
    table.insert(members, 1, "ot=th:" .. hex(math.random(1, 14)) .. ";rv:" .. hex(14))
  end
  for i = 1, math.random(0, 40) do
    table.insert(members, "v" .. i .. "=" .. hex(math.random(1, 64)))
  end
  return table.concat(members, ",")
end

-- At most 30 entries: even written in all three spellings without the filter's bound on the
-- key-in-the-name headers (baggage.max_headers), that stays under the 100 request headers an
-- Envoy upstream accepts by default (over it, it answers 431).
local function baggage()
  local entries = {}
  for i = 1, math.random(0, 30) do
    entries[i] = "k" .. i .. "=" .. hex(math.random(1, 40)) .. (math.random(4) == 1 and ";p=1" or "")
  end
  return table.concat(entries, ",")
end

local generators = {
  function() return "traceparent", "00-" .. hex(32) .. "-" .. hex(16) .. "-" .. flags[math.random(3)] end,
  function() return "tracestate", tracestate() end,
  function() return "b3", hex(32) .. "-" .. hex(16) .. "-" .. ({ "0", "1", "d" })[math.random(3)] end,
  function() return "x-b3-traceid", hex(({ 16, 32 })[math.random(2)]) end,
  function() return "x-b3-spanid", hex(16) end,
  function() return "x-b3-sampled", ({ "0", "1", "true" })[math.random(3)] end,
  function() return "x-b3-flags", "1" end,
  function()
    local v = "Root=1-" .. hex(8) .. "-" .. hex(24) .. ";Parent=" .. hex(16) .. ";Sampled=" .. ({ "0", "1", "?" })[math.random(3)]
    if math.random(3) == 1 then v = v .. ";Lineage=" .. hex(math.random(1, 200)) end
    return "x-amzn-trace-id", v
  end,
  function() return "x-cloud-trace-context", hex(32) .. "/" .. dec(math.random(1, 19)) .. ";o=" .. math.random(0, 1) end,
  function() return "uber-trace-id", hex(32) .. ":" .. hex(16) .. ":0:" .. math.random(0, 3) end,
  function() return "jaeger-debug-id", "debug-" .. hex(6) end,
  function() return "x-datadog-trace-id", dec(math.random(1, 20)) end,
  function() return "x-datadog-parent-id", dec(math.random(1, 20)) end,
  function() return "x-datadog-sampling-priority", tostring(math.random(-1, 2)) end,
  function() return "x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=" .. hex(16) end,
  function() return "grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=" end,
  function() return "baggage", baggage() end,
  function() return "uberctx-" .. hex(4), hex(math.random(1, 30)) end,
  function() return "ot-baggage-" .. hex(4), hex(math.random(1, 30)) end,
  function() return "x-force-trace", "bench." .. dec(10) .. "." .. hex(64) end,
}

local paths = { "/", "/checkout/cart", "/api/items?id=7", "/health" }
local authorities = { "shop.example.com", "127.0.0.1", "api.example.com" }

function setup(thread)
  thread:set("id", math.random(1000000))
end

function init(args)
  math.randomseed(1234 + (id or 0))
end

function request()
  local headers = { ["Host"] = authorities[math.random(#authorities)] }
  if math.random(3) == 1 then headers["x-env"] = "load" end
  for _ = 1, math.random(0, 8) do
    local name, value = generators[math.random(#generators)]()
    headers[name] = maybe_break(value)
  end
  local method = math.random(4) == 1 and "POST" or "GET"
  return wrk.format(method, paths[math.random(#paths)], headers, method == "POST" and "x" or nil)
end
