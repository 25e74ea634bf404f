
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u', 't')
if cur[1] ~= ARGV[2] or cur[3] or not cur[2] then return {0} end
local old = tonumber(cur[2])
if old <= tonumber(ARGV[1]) then return {0} end
local e = tonumber(ARGV[4])
local t = cur[5] or cur[2]
local extend = e > tonumber(t)
if extend then t = ARGV[9] end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 'e', ARGV[4], 'l', ARGV[5], 'b', ARGV[6], 'd', ARGV[8], 't', t, 'u', ARGV[10])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 'e', ARGV[4], 'l', ARGV[5], 'b', ARGV[6], 'd', ARGV[8], 't', t)
  if cur[4] then redis.call('HDEL', KEYS[1], 'u') end
end
if extend then redis.call('PEXPIREAT', KEYS[1], t) end
if e < old then redis.call('ZADD', KEYS[2], ARGV[4], string.sub(KEYS[1], -64)) end
if KEYS[3] and cur[4] ~= ARGV[10] then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[11], string.sub(KEYS[1], -64))
  if redis.call('PEXPIRETIME', KEYS[3]) < tonumber(ARGV[12]) then
    redis.call('PEXPIREAT', KEYS[3], ARGV[12])
  end
end
if cur[4] then return {1, cur[4]} end
return 1
