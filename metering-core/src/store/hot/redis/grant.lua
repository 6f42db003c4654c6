-- Adds granted credits to a period: always when positive, when negative only if the
-- balance stays at or above the floor.
--
-- KEYS[1]  the tenant's counters
-- ARGV     period start, allowance, overdraft, amount
-- Returns  {'u'} not loaded | {'f'} below the floor | {'ok', remaining}

local counters = KEYS[1]
if redis.call('EXISTS', counters) == 0 then
  return {'u'}
end
local used = tonumber(redis.call('HGET', counters, 'u:' .. ARGV[1]) or '0')
local granted = tonumber(redis.call('HGET', counters, 'g:' .. ARGV[1]) or '0')
local amount = tonumber(ARGV[4])
local remaining = tonumber(ARGV[2]) + granted + amount - used
if amount < 0 and remaining < -tonumber(ARGV[3]) then
  return {'f'}
end
redis.call('HSET', counters, 'g:' .. ARGV[1], string.format('%d', granted + amount))
return {'ok', string.format('%d', remaining)}
