-- W3C traceparent -> B3 multi, AWS X-Ray and Google Cloud Trace headers, the way users write it
-- in an Envoy Lua filter today. The Envoy load benchmark compares tracebridge with it; it does
-- the same header work as tracebridge's default configuration on a W3C request (five headers
-- written), with far less validation.

-- 16 hex digits to the unsigned 64-bit decimal Cloud Trace wants. Lua numbers are doubles, so
-- the conversion runs digit by digit on a little-endian array of decimal digits.
local function hex_to_decimal(hex)
  local digits = { 0 }
  for i = 1, #hex do
    local carry = tonumber(hex:sub(i, i), 16)
    for j = 1, #digits do
      local v = digits[j] * 16 + carry
      digits[j] = v % 10
      carry = (v - v % 10) / 10
    end
    while carry > 0 do
      digits[#digits + 1] = carry % 10
      carry = (carry - carry % 10) / 10
    end
  end
  local out = {}
  for j = #digits, 1, -1 do
    out[#out + 1] = digits[j]
  end
  return table.concat(out)
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local traceparent = headers:get("traceparent")
  if traceparent == nil then
    return
  end
  local trace, span, flags = traceparent:match("^00%-(%x+)%-(%x+)%-(%x%x)$")
  if trace == nil or #trace ~= 32 or #span ~= 16 then
    return
  end
  local sampled = (tonumber(flags, 16) % 2 == 1) and "1" or "0"
  headers:replace("x-b3-traceid", trace)
  headers:replace("x-b3-spanid", span)
  headers:replace("x-b3-sampled", sampled)
  headers:replace("x-amzn-trace-id",
    "Root=1-" .. trace:sub(1, 8) .. "-" .. trace:sub(9) .. ";Parent=" .. span .. ";Sampled=" .. sampled)
  headers:replace("x-cloud-trace-context", trace .. "/" .. hex_to_decimal(span) .. ";o=" .. sampled)
end
