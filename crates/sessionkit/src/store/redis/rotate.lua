
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not live(cur[2], ARGV[3]) or cur[3] or cur[1] ~= ARGV[4] then return {0} end
if live(redis.call('HGET', KEYS[4], 'e'), ARGV[3]) then return {2} end
put(KEYS[4], 5)
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
redis.call('ZADD', KEYS[6], 0, ARGV[2])
retire(12, ARGV[3])
return {1, cur[4]}
