
local cur = redis.call('HMGET', KEYS[1], 'e', 'b', 'a', 't')
if not cur[1] then return 0 end
local old = tonumber(cur[1])
if old <= tonumber(ARGV[1]) then return 0 end
local e, en = ARGV[2], tonumber(ARGV[2])
local b = cur[2] and tonumber(cur[2])
if b and b < en then e, en = cur[2], b end
local t = cur[4] or cur[1]
if en > tonumber(t) then
  t = ARGV[3]
  if b and b < tonumber(t) then t = cur[2] end
  redis.call('HSET', KEYS[1], 'l', ARGV[1], 'e', e, 't', t)
  redis.call('PEXPIREAT', KEYS[1], t)
else
  redis.call('HSET', KEYS[1], 'l', ARGV[1], 'e', e)
end
if not cur[3] and en < old then redis.call('ZADD', KEYS[2], e, string.sub(KEYS[1], -64)) end
return 1
