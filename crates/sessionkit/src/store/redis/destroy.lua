
local cur = redis.call('HMGET', KEYS[1], 'u', 'e', 'l', 'd')
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {n, cur[1], cur[2], cur[3], cur[4]}
