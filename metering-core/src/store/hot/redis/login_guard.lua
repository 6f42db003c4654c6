-- A login's state now: a lock or window whose time has passed is forgotten.
--
-- KEYS[1]  the login's state (see login_failed.lua)
-- ARGV     now
-- Returns  {failures, locked until or ''}

local f, l, e = unpack(redis.call('HMGET', KEYS[1], 'f', 'l', 'e'))
if not e or tonumber(e) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return {'0', ''}
end
return {f, l}
