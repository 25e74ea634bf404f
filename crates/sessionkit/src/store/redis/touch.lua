
local cur = redis.call('HMGET', KEYS[1], 'e', 'b', 'a', 't')
if not cur[1] or tonumber(cur[1]) <= tonumber(ARGV[2]) then return 0 end
local e = ARGV[3]
if cur[2] and tonumber(cur[2]) < tonumber(e) then e = cur[2] end
local t = cur[4] or cur[1]
if tonumber(e) > tonumber(t) then
  t = ARGV[4]
  if cur[2] and tonumber(cur[2]) < tonumber(t) then t = cur[2] end
  redis.call('HSET', KEYS[1], 'l', ARGV[2], 'e', e, 't', t)
  redis.call('PEXPIREAT', KEYS[1], t)
else
  redis.call('HSET', KEYS[1], 'l', ARGV[2], 'e', e)
end
if not cur[3] and tonumber(e) < tonumber(cur[1]) then redis.call('ZADD', KEYS[2], e, ARGV[1]) end
return 1
