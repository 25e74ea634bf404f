
local cur = redis.call('HMGET', KEYS[1], 'e', 'a', 'u')
if live(cur[1], ARGV[2]) and not cur[2] then
  redis.call('ZADD', KEYS[2], cur[1], ARGV[1])
  return {0}
end
if cur[1] and not cur[2] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {1, cur[3]}
