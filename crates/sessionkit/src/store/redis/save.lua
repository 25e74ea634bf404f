
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u', 't')
if not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[2]) or cur[3] or cur[1] ~= ARGV[3] then return {0} end
local t = cur[5] or cur[2]
local extend = tonumber(ARGV[5]) > tonumber(t)
if extend then t = ARGV[11] end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10], 't', t, 'u', ARGV[9])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[5], 'l', ARGV[6], 'b', ARGV[7], 'd', ARGV[10], 't', t)
  if cur[4] then redis.call('HDEL', KEYS[1], 'u') end
end
if extend then redis.call('PEXPIREAT', KEYS[1], t) end
if tonumber(ARGV[5]) < tonumber(cur[2]) then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1]) end
if KEYS[4] and cur[4] ~= ARGV[9] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[12], ARGV[1])
  if redis.call('PEXPIRETIME', KEYS[4]) < tonumber(ARGV[13]) then
    redis.call('PEXPIREAT', KEYS[4], ARGV[13])
  end
end
return {1, cur[4]}
