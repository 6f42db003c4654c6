-- Refuses an access token until it expires; a later expiry wins.
--
-- KEYS[1]  the token's entry: the instant it expires
-- ARGV     until, time to live (ms)

local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
