-- Feast's online write with its "an older event never overwrites a newer one" rule,
-- checked and applied on the server in one step per key (see RedisStore::write_batch).
--
-- KEYS: the entity hashes. ARGV: the `_ts:{view}` field, the key TTL in seconds (0:
-- none), then per key: event seconds, event nanos, the serialized Timestamp, the
-- number of feature fields n, and n (field, value) pairs.
-- Returns one entry per key: 1 written, 0 skipped (not newer), -1 the stored `_ts`
-- is not a Timestamp (nothing written), or Redis's error text (nothing written).

-- A stored google.protobuf.Timestamp (seconds: field 1, nanos: field 2, varints), or
-- nil when it is not one or is outside the type's range. Lua numbers are doubles:
-- every value in range is exact; a negative varint (10 bytes, two's complement) is
-- read from its inverted groups so that it stays exact too.
local function decode(s)
  local sec, nanos, i, n = 0, 0, 1, #s
  while i <= n do
    local tag = string.byte(s, i)
    i = i + 1
    if tag ~= 8 and tag ~= 16 then return nil end
    local v, inv, scale, len, b = 0, 0, 1, 0, 128
    while b >= 128 do
      b = string.byte(s, i)
      if b == nil or len == 10 then return nil end
      i = i + 1
      local g = b % 128
      v = v + g * scale
      if len < 9 then inv = inv + (127 - g) * scale end
      scale = scale * 128
      len = len + 1
    end
    if len == 10 then v = -(inv + 1) end
    if tag == 8 then sec = v else nanos = v end
  end
  if sec < -62135596800 or sec > 253402300799 or nanos < 0 or nanos >= 1000000000 then
    return nil
  end
  return sec, nanos
end

local ts_field, ttl = ARGV[1], tonumber(ARGV[2])
local out = {}
local a = 3
for k = 1, #KEYS do
  local key = KEYS[k]
  local sec, nanos, stamp, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local first = a + 4
  a = first + 2 * n
  local stored = redis.pcall('HGET', key, ts_field)
  local state = 1
  if type(stored) == 'table' and stored.err then
    state = stored.err
  elseif stored then
    local s, ns = decode(stored)
    if s == nil then
      state = -1
    elseif (s ~= 0 or ns ~= 0) and (sec < s or (sec == s and nanos <= ns)) then
      -- Feast's rule: a zero stored time means none; an equal time is not newer.
      state = 0
    end
  end
  if state == 1 then
    if n <= 1000 then
      redis.call('HSET', key, ts_field, stamp, unpack(ARGV, first, a - 1))
    else
      -- unpack is bounded by Lua's C stack: wide views go in slices.
      redis.call('HSET', key, ts_field, stamp)
      for from = first, a - 1, 2000 do
        redis.call('HSET', key, unpack(ARGV, from, math.min(from + 1999, a - 1)))
      end
    end
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  end
  out[k] = state
end
return out
