-- Loads a tenant's counters unless they are loaded already; all of them at once, with the
-- residency field 'r', so they are present or absent together.
--
-- KEYS[1]  the tenant's counters
-- ARGV     counters ttl (s), then field, value pairs

local counters = KEYS[1]
if redis.call('EXISTS', counters) == 1 then
  return 0
end
redis.call('HSET', counters, 'r', '1')
for i = 2, #ARGV, 2 do
  redis.call('HSET', counters, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', counters, ARGV[1])
return 1
