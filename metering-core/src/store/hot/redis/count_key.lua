-- Counts a call in a key's fixed window, which opens at its first call.
--
-- KEYS[1]  the key's window: e end, c count
-- ARGV     now, window (microseconds), max
-- Returns  {'ok'} counted | {'over', microseconds until the window ends}

local now = tonumber(ARGV[1])
local e, c = unpack(redis.call('HMGET', KEYS[1], 'e', 'c'))
if not e or tonumber(e) <= now then
  e, c = now + tonumber(ARGV[2]), 0
else
  e, c = tonumber(e), tonumber(c)
end
if c >= tonumber(ARGV[3]) then
  return {'over', string.format('%d', e - now)}
end
redis.call('HSET', KEYS[1], 'e', string.format('%d', e), 'c', string.format('%d', c + 1))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(math.ceil((e - now) / 1000), 1)))
return {'ok'}
