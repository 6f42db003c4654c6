-- Takes back what an admitted call counted and forgets its event_id, if the tenant's
-- counters are loaded.
--
-- KEYS[1]  the tenant's counters; KEYS[2] the remembered decision for the event_id
-- ARGV     cost, period start, number of limits, then per limit: kind (c | s), field,
--          interval (s)

local counters = KEYS[1]
if redis.call('EXISTS', counters) == 0 then
  return 0
end
local n = tonumber(ARGV[3])
for i = 1, n do
  local b = 3 + (i - 1) * 3
  local kind, field = ARGV[b + 1], ARGV[b + 2]
  local stored = redis.call('HGET', counters, field)
  if kind == 'c' then
    if tonumber(stored or '0') > 0 then
      redis.call('HINCRBY', counters, field, -1)
    end
  elseif stored then
    redis.call('HSET', counters, field, string.format('%d', tonumber(stored) - tonumber(ARGV[b + 3])))
  end
end
local used_field = 'u:' .. ARGV[2]
local used = tonumber(redis.call('HGET', counters, used_field) or '0')
redis.call('HSET', counters, used_field, string.format('%d', math.max(used - tonumber(ARGV[1]), 0)))
redis.call('DEL', KEYS[2])
return 1
