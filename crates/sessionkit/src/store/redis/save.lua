
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[2]) or cur[3] or cur[1] ~= ARGV[3] then return {0} end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10], 'u', ARGV[9])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10])
  if cur[4] then redis.call('HDEL', KEYS[1], 'u') end
end
redis.call('PEXPIREAT', KEYS[1], ARGV[11])
if ARGV[5] ~= cur[2] then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1]) end
if KEYS[4] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[12], ARGV[1])
  if redis.call('PEXPIRETIME', KEYS[4]) < tonumber(ARGV[13]) then
    redis.call('PEXPIREAT', KEYS[4], ARGV[13])
  end
end
return {1, cur[4]}
