-- Counts a failed login; locks the key once failures within the window reach the maximum.
--
-- KEYS[1]  the login's state: f failures, l locked until ('' none), e expires at
-- ARGV     now, window, lock for (all microseconds), max failures
-- Returns  {failures, locked until or ''}

local now = tonumber(ARGV[1])
local f, l, e = unpack(redis.call('HMGET', KEYS[1], 'f', 'l', 'e'))
local failures, locked, expires = 0, nil, now + tonumber(ARGV[2])
if e and tonumber(e) > now then
  failures, expires = tonumber(f), tonumber(e)
  if l ~= '' then
    locked = tonumber(l)
  end
end
failures = failures + 1
if not locked and failures >= math.max(tonumber(ARGV[4]), 1) then
  locked = now + tonumber(ARGV[3])
  expires = locked
end
local locked_text = ''
if locked then
  locked_text = string.format('%d', locked)
end
redis.call('HSET', KEYS[1], 'f', string.format('%d', failures), 'l', locked_text, 'e', string.format('%d', expires))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(math.ceil((expires - now) / 1000), 1)))
return {string.format('%d', failures), locked_text}
