
local owner = redis.call('HGET', KEYS[1], 'u')
if not owner then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  return -1
end
if owner ~= ARGV[2] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
